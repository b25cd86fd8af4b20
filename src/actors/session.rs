//! `WsSession`: one actor per WebSocket connection, visitor or agent.
//!
//! It parses frames, enforces the limits of SPEC §5 (frame size, invalid-frame streaks,
//! the visitor send rate, heartbeats), and talks to rooms. Whatever is sent *to* a session
//! goes through its [`SessionHandle`], which bounds the frames queued for it: a client too
//! slow to read is disconnected instead of growing the node's memory.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use uuid::Uuid;

use super::dispatcher::GetRoom;
use super::room::{Join, Leave, Post, Room};
use crate::bus::{AgentConn, Event};
use crate::db::writer::{NewMessage, WriteOutcome};
use crate::domain::limits::{self, TokenBucket};
use crate::error::{AppError, AppResult};
use crate::presence::AdoptConversation;
use crate::protocol::{
    Agent, ClientFrame, Conversation, Message, SenderType, ServerFrame, Site, Visitor,
};
use crate::state::{AppState, ConnectionPermit};

/// How often an agent connection marks the agent as seen.
const AGENT_SEEN_EVERY: Duration = Duration::from_secs(20);
/// A typing "on" is relayed at most this often.
const TYPING_THROTTLE: Duration = Duration::from_millis(1500);

/// What can be sent to a session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Outbound {
    Frame(ByteString),
    Close(CloseCode, &'static str),
}

struct Shared {
    queued: AtomicUsize,
    overflowed: AtomicBool,
}

/// The sending side of a session: a bounded queue in front of its mailbox.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    recipient: Recipient<Outbound>,
    shared: Arc<Shared>,
    limit: usize,
}

impl SessionHandle {
    /// A handle for a room member that is not a WebSocket session (a visitor's HTTP
    /// long-poll). Its receiver calls [`SessionHandle::taken`] for every frame it handles.
    pub fn new(id: u64, recipient: Recipient<Outbound>, limit: usize) -> SessionHandle {
        SessionHandle {
            id,
            recipient,
            shared: Arc::new(Shared {
                queued: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
            }),
            limit,
        }
    }

    /// One queued frame was handled by the receiver.
    pub fn taken(&self) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queues a frame. Past the limit the frame is dropped, the client is marked too slow
    /// and will be closed; returns false then.
    pub fn push(&self, text: ByteString) -> bool {
        if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
                // One close request; it is processed as soon as the client reads again,
                // and TCP_USER_TIMEOUT ends a client that never does.
                self.recipient
                    .do_send(Outbound::Close(CloseCode::Policy, "too slow"));
            }
            return false;
        }
        self.recipient.do_send(Outbound::Frame(text));
        true
    }

    /// Closes the session (token revoked, node stopping).
    pub fn close(&self, code: CloseCode, why: &'static str) {
        self.recipient.do_send(Outbound::Close(code, why));
    }

    pub fn revoke(&self) {
        self.close(CloseCode::Policy, "token revoked");
    }
}

/// Who is on the other end.
pub enum Peer {
    Visitor {
        site: Arc<Site>,
        visitor: Box<Visitor>,
        token: String,
        conversation: Option<Box<Conversation>>,
        agents_online: bool,
        bucket: TokenBucket,
    },
    Agent {
        agent: Box<Agent>,
        token_hash: String,
        last_seen_write: Instant,
    },
}

pub struct WsSession {
    id: u64,
    state: AppState,
    peer: Peer,
    shared: Arc<Shared>,
    heartbeat: Instant,
    room: Option<Addr<Room>>,
    invalid_streak: u32,
    refused_since: Option<Instant>,
    typing: Option<(bool, Instant)>,
    fragments: Option<BytesMut>,
    closing: bool,
    _permit: ConnectionPermit,
}

impl WsSession {
    pub fn new(state: AppState, peer: Peer, permit: ConnectionPermit) -> WsSession {
        WsSession {
            id: state.next_session_id(),
            state,
            peer,
            shared: Arc::new(Shared {
                queued: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
            }),
            heartbeat: Instant::now(),
            room: None,
            invalid_streak: 0,
            refused_since: None,
            typing: None,
            fragments: None,
            closing: false,
            _permit: permit,
        }
    }

    fn role(&self) -> &'static str {
        match self.peer {
            Peer::Visitor { .. } => "visitor",
            Peer::Agent { .. } => "agent",
        }
    }

    fn session_handle(&self, ctx: &mut ws::WebsocketContext<Self>) -> SessionHandle {
        SessionHandle {
            id: self.id,
            recipient: ctx.address().recipient(),
            shared: self.shared.clone(),
            limit: self.state.settings.outgoing_queue,
        }
    }

    fn send_text(&self, ctx: &mut ws::WebsocketContext<Self>, text: impl Into<ByteString>) {
        self.state
            .metrics
            .ws_frames_out
            .with_label_values(&[self.role()])
            .inc();
        ctx.text(text);
    }

    fn send_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        err: &AppError,
        client_ref: Option<&str>,
    ) {
        self.state
            .metrics
            .ws_errors
            .with_label_values(&[err.code.as_str()])
            .inc();
        let text = ServerFrame::Error {
            code: err.code,
            message: &err.message,
            client_ref,
        }
        .encode();
        self.send_text(ctx, text);
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, why: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        ctx.close(Some(CloseReason {
            code,
            description: Some(why.to_string()),
        }));
        ctx.stop();
    }

    /// A frame that could not be used: error frame, and 1008 after too many in a row.
    fn invalid(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        err: AppError,
        client_ref: Option<&str>,
    ) {
        self.send_error(ctx, &err, client_ref);
        self.invalid_streak += 1;
        if self.invalid_streak >= limits::MAX_INVALID_FRAMES_IN_A_ROW {
            self.close(ctx, CloseCode::Policy, "too many invalid frames");
        }
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.state
            .metrics
            .ws_frames_in
            .with_label_values(&[self.role()])
            .inc();
        if text.len() > self.state.settings.max_frame_bytes {
            let err = AppError::too_large(format!(
                "frame is {} bytes; the limit is {}",
                text.len(),
                self.state.settings.max_frame_bytes
            ));
            return self.invalid(ctx, err, None);
        }
        let frame = match ClientFrame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                let r = e.client_ref.clone();
                return self.invalid(ctx, AppError::bad_request(e.message), r.as_deref());
            }
        };
        match self.on_frame(frame, ctx) {
            Ok(()) => self.invalid_streak = 0,
            Err((err, r)) => self.invalid(ctx, err, r.as_deref()),
        }
    }

    /// Handles a decoded frame; an `Err` is an invalid frame (answered with an error frame).
    fn on_frame(
        &mut self,
        frame: ClientFrame,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), (AppError, Option<String>)> {
        match frame {
            ClientFrame::Ping {} => {
                self.send_text(ctx, ServerFrame::Pong {}.encode());
                Ok(())
            }
            ClientFrame::MessageSend {
                client_msg_id,
                body,
                conversation_id,
                private,
                attachments,
            } => self.on_send(
                client_msg_id,
                body,
                conversation_id,
                private,
                attachments,
                ctx,
            ),
            ClientFrame::Resume {
                after_seq,
                conversation_id,
            } => self.on_resume(after_seq, conversation_id, ctx),
            ClientFrame::Typing {
                on,
                conversation_id,
            } => self.on_typing(on, conversation_id),
            ClientFrame::Read {
                up_to_seq,
                conversation_id,
            } => self.on_read(up_to_seq, conversation_id),
            ClientFrame::ProfileUpdate {
                name,
                email,
                attributes,
            } => self.on_profile(name, email, attributes, ctx),
            ClientFrame::Rating { score, comment } => self.on_rating(score, comment, ctx),
        }
    }

    /// The conversation a frame is about: a visitor's own, or the one an agent names.
    fn target(&self, conversation_id: Option<Uuid>) -> Result<Option<Uuid>, AppError> {
        match &self.peer {
            Peer::Visitor { conversation, .. } => Ok(conversation.as_ref().map(|c| c.id)),
            Peer::Agent { .. } => conversation_id
                .map(Some)
                .ok_or_else(|| AppError::bad_request("conversation_id is required")),
        }
    }

    fn on_send(
        &mut self,
        client_msg_id: String,
        body: String,
        conversation_id: Option<Uuid>,
        private: Option<bool>,
        attachments: Vec<Uuid>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), (AppError, Option<String>)> {
        let cref = Some(
            client_msg_id
                .chars()
                .take(limits::MAX_CLIENT_MSG_ID)
                .collect::<String>(),
        );
        limits::validate_client_msg_id(&client_msg_id).map_err(|e| (e, cref.clone()))?;
        let body = limits::validate_body_with_attachments(&body, attachments.len())
            .map_err(|e| (e, cref.clone()))?;
        let now = Instant::now();
        let (sender_type, sender_id, private) = match &mut self.peer {
            Peer::Visitor {
                bucket, visitor, ..
            } => {
                if !bucket.try_take(now) {
                    self.state
                        .metrics
                        .rate_limited
                        .with_label_values(&["visitor_send"])
                        .inc();
                    let since = *self.refused_since.get_or_insert(now);
                    let err = AppError::rate_limited("sending too fast; slow down");
                    self.send_error(ctx, &err, cref.as_deref());
                    if now.duration_since(since) >= limits::MAX_REFUSED_STREAK {
                        self.close(ctx, CloseCode::Policy, "rate limit exceeded");
                    }
                    return Ok(());
                }
                self.refused_since = None;
                (SenderType::Visitor, Some(visitor.id), false)
            }
            Peer::Agent { agent, .. } => {
                (SenderType::Agent, Some(agent.id), private.unwrap_or(false))
            }
        };
        let target = self
            .target(conversation_id)
            .map_err(|e| (e, cref.clone()))?;
        let msg = NewMessage {
            conversation_id: target.unwrap_or_else(Uuid::nil),
            sender_type,
            sender_id,
            private,
            body,
            client_msg_id: Some(client_msg_id.clone()),
            attachments,
            origin: Some(self.id),
        };
        let state = self.state.clone();
        let handle = self.session_handle(ctx);
        let known_room = self.room.clone().filter(|r| r.connected());
        let visitor_ctx = match &self.peer {
            Peer::Visitor { site, visitor, .. } if target.is_none() => Some((site.id, visitor.id)),
            _ => None,
        };
        let is_visitor = matches!(self.peer, Peer::Visitor { .. });
        let opens_conversation = visitor_ctx.is_some();
        let fut = async move {
            let mut msg = msg;
            let mut created = None;
            if let Some((site_id, visitor_id)) = visitor_ctx {
                // First message: open the conversation (idempotent per visitor).
                let files = msg.attachments.clone();
                let (conv, is_new) = state
                    .db
                    .run(async |conn| {
                        crate::db::attachments::check_visitor_files(conn, visitor_id, &files)
                            .await?;
                        crate::db::conversations::get_or_create(conn, site_id, visitor_id).await
                    })
                    .await?;
                if is_new {
                    state.bus.publish(Event::ConversationCreated {
                        conversation: conv.clone(),
                    });
                    state.assign.notify_one();
                }
                msg.conversation_id = conv.id;
                created = Some(conv);
            }
            let (room, joined) = match known_room {
                Some(r) => (r, false),
                None => {
                    let r =
                        room_for(&state, msg.conversation_id, is_visitor.then_some(handle)).await?;
                    (r, is_visitor)
                }
            };
            let outcome = room.send(Post(msg)).await??;
            // The conversation may have been assigned before this session joined its room:
            // read it again so the visitor learns its assignee.
            let created = match created {
                Some(c) => {
                    let id = c.id;
                    let fresh = state
                        .db
                        .run(async |conn| crate::db::conversations::get(conn, id).await)
                        .await;
                    Some(fresh.ok().flatten().unwrap_or(c))
                }
                None => None,
            };
            Ok::<_, AppError>((outcome, created, joined.then_some(room)))
        };
        let fut = fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((outcome, created, joined)) => {
                if let Some(conv) = created {
                    let text = ServerFrame::ConversationUpdated {
                        conversation_id: conv.id,
                        conversation: &conv,
                    }
                    .encode();
                    act.send_text(ctx, text);
                    if let Peer::Visitor { conversation, .. } = &mut act.peer {
                        *conversation = Some(Box::new(conv));
                    }
                }
                if joined.is_some() {
                    act.room = joined;
                }
                let message: &Message = outcome.message();
                let text = ServerFrame::MessageAck {
                    client_msg_id: &client_msg_id,
                    message,
                }
                .encode();
                act.send_text(ctx, text);
                if let WriteOutcome::Created(_) = outcome {
                    if let Peer::Visitor {
                        conversation: Some(c),
                        ..
                    } = &mut act.peer
                    {
                        c.last_seq = c.last_seq.max(message.seq);
                    }
                }
            }
            Err(e) => {
                act.send_error(ctx, &e, Some(&client_msg_id));
            }
        });
        if opens_conversation {
            // Frames sent right behind the first message wait until its conversation and
            // room are known: racing to open it, they would be stored out of order.
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
        Ok(())
    }

    fn on_resume(
        &mut self,
        after_seq: i64,
        conversation_id: Option<Uuid>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), (AppError, Option<String>)> {
        let target = self.target(conversation_id).map_err(|e| (e, None))?;
        let include_private = matches!(self.peer, Peer::Agent { .. });
        let Some(conv) = target else {
            let text = ServerFrame::MessageHistory {
                conversation_id: None,
                messages: &[],
                more: false,
            }
            .encode();
            self.send_text(ctx, text);
            return Ok(());
        };
        let state = self.state.clone();
        async move {
            state
                .cache
                .history_after(conv, after_seq.max(0), include_private)
                .await
        }
        .into_actor(self)
        .map(move |res, act, ctx| match res {
            Ok((messages, more)) => {
                let text = ServerFrame::MessageHistory {
                    conversation_id: Some(conv),
                    messages: &messages,
                    more,
                }
                .encode();
                act.send_text(ctx, text);
            }
            Err(e) => act.send_error(ctx, &e, None),
        })
        .spawn(ctx);
        Ok(())
    }

    fn sender(&self) -> (SenderType, Option<Uuid>) {
        match &self.peer {
            Peer::Visitor { visitor, .. } => (SenderType::Visitor, Some(visitor.id)),
            Peer::Agent { agent, .. } => (SenderType::Agent, Some(agent.id)),
        }
    }

    fn on_typing(
        &mut self,
        on: bool,
        conversation_id: Option<Uuid>,
    ) -> Result<(), (AppError, Option<String>)> {
        let Some(conv) = self.target(conversation_id).map_err(|e| (e, None))? else {
            return Ok(()); // nobody to tell yet
        };
        let now = Instant::now();
        let relay = match self.typing {
            Some((last_on, at)) => {
                last_on != on || (on && now.duration_since(at) >= TYPING_THROTTLE)
            }
            None => true,
        };
        if relay {
            self.typing = Some((on, now));
            let (sender_type, sender_id) = self.sender();
            self.state.bus.publish(Event::Typing {
                conversation_id: conv,
                sender_type,
                sender_id,
                on,
            });
        }
        Ok(())
    }

    fn on_read(
        &mut self,
        up_to_seq: i64,
        conversation_id: Option<Uuid>,
    ) -> Result<(), (AppError, Option<String>)> {
        if up_to_seq < 0 {
            return Err((AppError::bad_request("up_to_seq must be ≥ 0"), None));
        }
        let Some(conv) = self.target(conversation_id).map_err(|e| (e, None))? else {
            return Ok(());
        };
        let (sender_type, sender_id) = self.sender();
        self.state.bus.publish(Event::Read {
            conversation_id: conv,
            sender_type,
            sender_id,
            up_to_seq,
        });
        Ok(())
    }

    fn on_profile(
        &mut self,
        name: Option<String>,
        email: Option<String>,
        attributes: Option<serde_json::Value>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), (AppError, Option<String>)> {
        let Peer::Visitor { visitor, .. } = &self.peer else {
            return Err((
                AppError::bad_request("profile.update is for visitors"),
                None,
            ));
        };
        let name =
            limits::validate_profile_field("name", name.as_deref()).map_err(|e| (e, None))?;
        let email =
            limits::validate_profile_field("email", email.as_deref()).map_err(|e| (e, None))?;
        if email.as_deref().is_some_and(|e| !e.contains('@')) {
            return Err((AppError::bad_request("email is not an email address"), None));
        }
        let attributes = limits::validate_attributes(attributes).map_err(|e| (e, None))?;
        let id = visitor.id;
        let state = self.state.clone();
        async move {
            let v = state
                .db
                .run(async |conn| {
                    crate::db::visitors::update_profile(conn, id, name, email, attributes).await
                })
                .await?;
            state
                .cache
                .invalidate(crate::actors::cache::CacheKey::Visitor(id))
                .await;
            Ok(v)
        }
        .into_actor(self)
        .map(|res: AppResult<Visitor>, act, ctx| match res {
            Ok(v) => {
                let text = ServerFrame::VisitorUpdated { visitor: &v }.encode();
                act.send_text(ctx, text);
                crate::presence::profile_changed(&act.state, &v);
                if let Peer::Visitor { visitor, .. } = &mut act.peer {
                    **visitor = v;
                }
            }
            Err(e) => act.send_error(ctx, &e, None),
        })
        .spawn(ctx);
        Ok(())
    }

    fn on_rating(
        &mut self,
        score: i64,
        comment: Option<String>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), (AppError, Option<String>)> {
        let Peer::Visitor {
            conversation,
            visitor,
            ..
        } = &self.peer
        else {
            return Err((AppError::bad_request("rating is for visitors"), None));
        };
        let (stars, comment) =
            crate::domain::csat::validate(score, comment.as_deref()).map_err(|e| (e, None))?;
        let Some(conv) = conversation.as_ref().map(|c| c.id) else {
            return Err((AppError::conflict("there is no conversation to rate"), None));
        };
        let visitor_id = visitor.id;
        let state = self.state.clone();
        async move {
            let window = state.settings.csat_window();
            let c = state
                .db
                .run(async |conn| {
                    crate::db::csat::rate(conn, conv, visitor_id, stars, comment, window).await
                })
                .await?;
            state
                .bus
                .publish(Event::ConversationUpdated { conversation: c });
            Ok::<_, AppError>(())
        }
        .into_actor(self)
        .map(move |res, act, ctx| match res {
            Ok(()) => {
                let text = ServerFrame::RatingAck {
                    conversation_id: conv,
                    score,
                }
                .encode();
                act.send_text(ctx, text);
            }
            Err(e) => act.send_error(ctx, &e, None),
        })
        .spawn(ctx);
        Ok(())
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.heartbeat.elapsed() > self.state.settings.client_timeout() {
            log::debug!("session {}: client timed out", self.id);
            self.close(ctx, CloseCode::Away, "heartbeat timeout");
            return;
        }
        ctx.ping(b"");
        // A room that died is replaced; rejoin so live messages keep coming.
        if let (
            Some(room),
            Peer::Visitor {
                conversation: Some(c),
                ..
            },
        ) = (&self.room, &self.peer)
        {
            if !room.connected() {
                let state = self.state.clone();
                let conv = c.id;
                let handle = self.session_handle(ctx);
                async move { room_for(&state, conv, Some(handle)).await }
                    .into_actor(self)
                    .map(|res, act, _| {
                        if let Ok(r) = res {
                            act.room = Some(r);
                        }
                    })
                    .spawn(ctx);
            }
        }
        if let Peer::Agent {
            agent,
            last_seen_write,
            ..
        } = &mut self.peer
        {
            if last_seen_write.elapsed() >= AGENT_SEEN_EVERY {
                *last_seen_write = Instant::now();
                let id = agent.id;
                let state = self.state.clone();
                actix_web::rt::spawn(async move { state.mark_agent_seen(id).await });
            }
        }
    }
}

/// The room of `conversation`, joined by `member` when given. Retries when a room retires
/// between lookup and join.
pub async fn room_for(
    state: &AppState,
    conversation: Uuid,
    member: Option<SessionHandle>,
) -> AppResult<Addr<Room>> {
    for _ in 0..3 {
        // Fast path: the registry, without a dispatcher round trip.
        let known = state
            .bus
            .rooms
            .read()
            .ok()
            .and_then(|m| m.get(&conversation).cloned())
            .filter(|a| a.connected());
        let room = match known {
            Some(r) => r,
            None => {
                state
                    .dispatcher
                    .send(GetRoom {
                        conversation_id: conversation,
                    })
                    .await?
            }
        };
        match &member {
            None => return Ok(room),
            Some(h) => match room.send(Join { handle: h.clone() }).await {
                Ok(true) => return Ok(room),
                Ok(false) | Err(_) => continue,
            },
        }
    }
    Err(AppError::unavailable(
        "conversation room unavailable, retry",
    ))
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.state
            .metrics
            .ws_connections
            .with_label_values(&[self.role()])
            .inc();
        let handle = self.session_handle(ctx);
        self.state.sessions.insert(handle.clone());
        ctx.run_interval(self.state.settings.heartbeat(), |act, ctx| {
            act.heartbeat(ctx)
        });
        match &self.peer {
            Peer::Visitor {
                site,
                visitor,
                token,
                conversation,
                agents_online,
                ..
            } => {
                let now = chrono::Utc::now();
                let text = ServerFrame::Welcome {
                    token,
                    visitor,
                    conversation: conversation.as_deref(),
                    agents_online: *agents_online,
                    greeting: &site.greeting,
                    within_business_hours: site.is_open(now),
                    next_open_at: site.business_hours.as_ref().and_then(|h| h.next_open(now)),
                }
                .encode();
                self.send_text(ctx, text);
                crate::presence::connected(
                    &self.state,
                    site,
                    visitor,
                    self.id,
                    crate::presence::Link::Socket(ctx.address().recipient()),
                );
                if let Some(conv) = conversation.as_ref().map(|c| c.id) {
                    let state = self.state.clone();
                    async move { room_for(&state, conv, Some(handle)).await }
                        .into_actor(self)
                        .map(|res, act, _| match res {
                            Ok(r) => act.room = Some(r),
                            Err(e) => log::warn!("session {}: cannot join room: {e}", act.id),
                        })
                        .wait(ctx);
                }
            }
            Peer::Agent {
                agent, token_hash, ..
            } => {
                self.state.bus.agents.insert(AgentConn {
                    agent_id: agent.id,
                    token_hash: token_hash.clone(),
                    handle,
                });
            }
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.state
            .metrics
            .ws_connections
            .with_label_values(&[self.role()])
            .dec();
        self.state.sessions.remove(self.id);
        if let Some(room) = self.room.take() {
            room.do_send(Leave {
                session_id: self.id,
            });
        }
        if let Peer::Visitor { visitor, .. } = &self.peer {
            crate::presence::disconnected(&self.state, visitor.id, self.id);
        }
        match &self.peer {
            Peer::Agent { .. } => self.state.bus.agents.remove(self.id),
            Peer::Visitor {
                conversation: Some(c),
                ..
            } if self.typing.is_some_and(|(on, _)| on) => {
                let (sender_type, sender_id) = self.sender();
                self.state.bus.publish(Event::Typing {
                    conversation_id: c.id,
                    sender_type,
                    sender_id,
                    on: false,
                });
            }
            _ => {}
        }
        Running::Stop
    }
}

impl Handler<Outbound> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(text) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                if !self.closing {
                    self.send_text(ctx, text);
                }
            }
            Outbound::Close(code, why) => {
                if code == CloseCode::Policy && why == "too slow" {
                    self.state.metrics.slow_client_disconnects.inc();
                }
                self.close(ctx, code, why);
            }
        }
    }
}

impl Handler<AdoptConversation> for WsSession {
    type Result = ();
    /// A conversation was created for this visitor elsewhere (an agent greeted first, or
    /// another tab sent the first message): take it up as if the welcome had named it —
    /// tell the client, join its room, then send its history (joined first, so nothing
    /// committed in between is missed; the client drops what it has by `seq`).
    fn handle(&mut self, msg: AdoptConversation, ctx: &mut Self::Context) {
        let conv = msg.0;
        let Peer::Visitor {
            visitor,
            conversation,
            ..
        } = &mut self.peer
        else {
            return;
        };
        if conv.visitor_id != visitor.id || conversation.as_ref().is_some_and(|c| c.id == conv.id) {
            return;
        }
        let id = conv.id;
        let text = ServerFrame::ConversationUpdated {
            conversation_id: id,
            conversation: &conv,
        }
        .encode();
        *conversation = Some(conv);
        self.send_text(ctx, text);
        if let Some(old) = self.room.take() {
            old.do_send(Leave {
                session_id: self.id,
            });
        }
        let state = self.state.clone();
        let handle = self.session_handle(ctx);
        async move {
            let room = room_for(&state, id, Some(handle)).await?;
            let history = state.cache.history_after(id, 0, false).await?;
            Ok::<_, AppError>((room, history))
        }
        .into_actor(self)
        .map(move |res, act, ctx| match res {
            Ok((room, (messages, more))) => {
                act.room = Some(room);
                let text = ServerFrame::MessageHistory {
                    conversation_id: Some(id),
                    messages: &messages,
                    more,
                }
                .encode();
                act.send_text(ctx, text);
            }
            Err(e) => log::warn!("session {}: cannot take up conversation {id}: {e}", act.id),
        })
        .wait(ctx);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.heartbeat = Instant::now();
        let msg = match msg {
            Ok(m) => m,
            // A text frame that is not UTF-8 was read whole (actix reports it as an I/O
            // error): answer it like any other invalid frame; the connection stays usable.
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                return self.invalid(ctx, AppError::bad_request("frame is not valid UTF-8"), None);
            }
            // Any other I/O error is the connection going away (EOF without a close frame):
            // not the client's mistake, and nobody left to tell.
            Err(ws::ProtocolError::Io(e)) => {
                log::debug!("session {}: connection lost: {e}", self.id);
                self.closing = true;
                ctx.stop();
                return;
            }
            Err(e) => {
                // The codec cannot resynchronise after a protocol error: say why, then close.
                log::debug!("session {}: protocol error: {e}", self.id);
                let (code, err) = match e {
                    ws::ProtocolError::Overflow => {
                        (CloseCode::Size, AppError::too_large("frame too large"))
                    }
                    other => (
                        CloseCode::Protocol,
                        AppError::bad_request(other.to_string()),
                    ),
                };
                self.send_error(ctx, &err, None);
                self.close(ctx, code, "protocol error");
                return;
            }
        };
        match msg {
            ws::Message::Text(text) => self.on_text(&text, ctx),
            ws::Message::Binary(_) => self.invalid(
                ctx,
                AppError::bad_request("binary frames are not supported; send JSON text"),
                None,
            ),
            ws::Message::Ping(p) => ctx.pong(&p),
            ws::Message::Pong(_) => {}
            ws::Message::Close(_) => {
                self.closing = true;
                ctx.close(None);
                ctx.stop();
            }
            ws::Message::Continuation(item) => self.on_continuation(item, ctx),
            ws::Message::Nop => {}
        }
    }
}

impl WsSession {
    fn on_continuation(
        &mut self,
        item: actix_http::ws::Item,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let max = self.state.settings.max_frame_bytes;
        let (data, last, first_binary) = match item {
            actix_http::ws::Item::FirstText(b) => {
                self.fragments = Some(BytesMut::new());
                (b, false, false)
            }
            actix_http::ws::Item::FirstBinary(b) => {
                self.fragments = None;
                (b, false, true)
            }
            actix_http::ws::Item::Continue(b) => (b, false, false),
            actix_http::ws::Item::Last(b) => (b, true, false),
        };
        if first_binary {
            return self.invalid(
                ctx,
                AppError::bad_request("binary frames are not supported; send JSON text"),
                None,
            );
        }
        let Some(buf) = self.fragments.as_mut() else {
            return; // continuation of a refused message
        };
        if buf.len() + data.len() > max {
            self.fragments = None;
            return self.invalid(
                ctx,
                AppError::too_large(format!("message larger than {max} bytes")),
                None,
            );
        }
        buf.extend_from_slice(&data);
        if last {
            let whole: Bytes = self
                .fragments
                .take()
                .map(BytesMut::freeze)
                .unwrap_or_default();
            match std::str::from_utf8(&whole) {
                Ok(text) => {
                    let text = text.to_owned();
                    self.on_text(&text, ctx)
                }
                Err(_) => {
                    self.invalid(ctx, AppError::bad_request("frame is not valid UTF-8"), None)
                }
            }
        }
    }
}
