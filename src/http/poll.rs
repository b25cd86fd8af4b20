//! HTTP long-polling for visitors whose network blocks WebSocket (some corporate proxies).
//! The frames are those of the visitor socket (SPEC §3), with the same guarantees:
//!
//! - `POST /api/visitor/session?site=KEY[&token=T]` answers the `session.welcome` frame,
//!   creating the visitor when the token is unknown, as the socket handshake does.
//! - `POST /api/visitor/send?site=KEY&token=T` takes one client frame as its body and
//!   answers `{"frames":[…]}`: what the socket would send back. `message.send` goes through
//!   the conversation's room and the message writer like a socket send, so its
//!   `message.ack` comes after the commit, a resend with the same `client_msg_id` returns
//!   the original, and refused sends get an `error` frame with `ref`.
//! - `GET /api/visitor/poll?site=KEY&token=T&after_seq=N` answers `{"frames":[…]}`: the
//!   conversation's current state, then every visible message after N, or, when there is
//!   none yet, the first live frames of the conversation's room within [`POLL_WAIT`]. The
//!   poll joins the room *before* it reads the database, so nothing committed between the
//!   two is missed; whatever is committed between two polls is in the next one's read.
//!   Typing indicators and read receipts are not stored, so the poll also takes `ev`, the
//!   `ev` of the previous answer: every node keeps the agents' latest typing and read
//!   receipt per conversation ([`crate::bus::Signals`]), and a poll answers at once with
//!   the ones newer than `ev` — so one that happened between two polls still arrives, as
//!   it would over the socket.
//! - While a poll waits, the visitor counts as online ([`crate::presence`]); a visitor
//!   without a conversation waits for one — the first message, or an agent greeting first.
//!
//! Requests are "simple" in the CORS sense (the token travels in the query, the body as
//! text/plain), so the widget on another origin needs no preflight; answers carry
//! `Access-Control-Allow-Origin` for the origins the site allows.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::CloseCode;
use bytestring::ByteString;
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use super::hash_token;
use crate::actors::room::{Leave, Post, Room};
use crate::actors::session::{room_for, Outbound, SessionHandle};
use crate::bus::Event;
use crate::db::writer::NewMessage;
use crate::domain::limits::{self, TokenBucket};
use crate::error::{AppError, AppResult};
use crate::http::widget::origin_allowed;
use crate::presence::Link;
use crate::protocol::{ClientFrame, Conversation, SenderType, ServerFrame, Site, Visitor};
use crate::state::AppState;

/// How long a poll waits for something to happen before answering with nothing new.
pub const POLL_WAIT: Duration = Duration::from_secs(25);
/// After the first live frame, how long to gather the frames that follow it.
const GATHER: Duration = Duration::from_millis(50);
/// At most this many live frames in one answer.
const MAX_FRAMES: usize = 100;
/// Send-rate buckets of visitors that stopped sending are forgotten after this.
const BUCKET_IDLE: Duration = Duration::from_secs(600);

#[derive(Deserialize)]
pub struct PollQuery {
    site: Option<String>,
    token: Option<String>,
    after_seq: Option<i64>,
    /// Identity verification (session only): see `http::identity`.
    user_id: Option<String>,
    user_hash: Option<String>,
    ev: Option<i64>,
}

/// `Access-Control-Allow-Origin` for a page the site allows.
pub(crate) fn with_cors(req: &HttpRequest, site: &Site, mut res: HttpResponse) -> HttpResponse {
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        if origin_allowed(site, Some(origin)) {
            if let Ok(v) = header::HeaderValue::from_str(origin) {
                res.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                res.headers_mut()
                    .insert(header::VARY, header::HeaderValue::from_static("Origin"));
            }
        }
    }
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

fn frames_response(frames: &[String]) -> HttpResponse {
    frames_response_ev(frames, None)
}

/// `{"frames":[…]}`, with `"ev"` (the signal cursor) for polls.
fn frames_response_ev(frames: &[String], ev: Option<i64>) -> HttpResponse {
    let mut body = String::with_capacity(40 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    body.push_str("{\"frames\":[");
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(f);
    }
    body.push(']');
    if let Some(ev) = ev {
        body.push_str(&format!(",\"ev\":{ev}"));
    }
    body.push('}');
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// The site named by the query, refusing pages the site does not allow.
pub(crate) async fn site_for(
    state: &AppState,
    req: &HttpRequest,
    key: Option<&str>,
) -> AppResult<Arc<Site>> {
    let key = key
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| AppError::bad_request("site (the widget key) is required"))?;
    let site = state
        .cache
        .site_by_key(key)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if !origin_allowed(&site, origin) && !super::assets::own_page(req, origin) {
        return Err(AppError::forbidden(
            "this page's origin may not use this site",
        ));
    }
    Ok(site)
}

fn presented(token: Option<&str>) -> Option<&str> {
    token.filter(|t| !t.is_empty() && t.len() <= 128)
}

/// The visitor behind the query's token (marking it seen).
pub(crate) async fn visitor_for(
    state: &AppState,
    site: &Site,
    token: Option<&str>,
) -> AppResult<Visitor> {
    let token = presented(token).ok_or_else(|| AppError::unauthorized("token is required"))?;
    let (site_id, hash) = (site.id, hash_token(token));
    state
        .db
        .run(async |conn| crate::db::visitors::by_token(conn, site_id, &hash).await)
        .await?
        .ok_or_else(|| AppError::unauthorized("unknown visitor token; start a new session"))
}

/// `POST /api/visitor/session`: the welcome frame, as on the socket.
pub async fn session(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PollQuery>,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let resolved = super::identity::resolve_visitor(
        &state,
        &site,
        super::identity::Presented {
            token: q.token.as_deref(),
            user_id: q.user_id.as_deref(),
            user_hash: q.user_hash.as_deref(),
        },
    )
    .await;
    let (visitor, token, conversation) = match resolved {
        Ok(r) => r,
        // The widget on the host's page must be able to read why (a refused identity).
        Err(e) => {
            let res = actix_web::ResponseError::error_response(&e);
            return Ok(with_cors(&req, &site, res));
        }
    };
    let now = chrono::Utc::now();
    let agents_online = state.cache.agents_online(state.available_window()).await? > 0;
    let text = ServerFrame::Welcome {
        token: &token,
        visitor: &visitor,
        conversation: conversation.as_ref(),
        agents_online,
        greeting: &site.greeting,
        within_business_hours: site.is_open(now),
        next_open_at: site.business_hours.as_ref().and_then(|h| h.next_open(now)),
    }
    .encode();
    let res = HttpResponse::Ok()
        .content_type("application/json")
        .body(text);
    Ok(with_cors(&req, &site, res))
}

fn error_frame(err: &AppError, client_ref: Option<&str>) -> String {
    ServerFrame::Error {
        code: err.code,
        message: &err.message,
        client_ref,
    }
    .encode()
}

fn conversation_frame(c: &Conversation) -> String {
    ServerFrame::ConversationUpdated {
        conversation_id: c.id,
        conversation: c,
    }
    .encode()
}

/// The send-rate bucket of one visitor, shared by its requests on this node.
fn take_send_token(state: &AppState, visitor: Uuid) -> bool {
    type Buckets = moka::sync::Cache<Uuid, Arc<Mutex<TokenBucket>>>;
    static BUCKETS: OnceLock<Buckets> = OnceLock::new();
    let buckets = BUCKETS.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(BUCKET_IDLE)
            .build()
    });
    let now = Instant::now();
    let bucket = buckets.get_with(visitor, || {
        Arc::new(Mutex::new(TokenBucket::new(
            state.settings.visitor_rate,
            state.settings.visitor_burst,
            now,
        )))
    });
    let mut b = match bucket.lock() {
        Ok(b) => b,
        Err(poisoned) => poisoned.into_inner(),
    };
    b.try_take(now)
}

/// `POST /api/visitor/send`: one client frame in, the socket's answers out.
pub async fn send(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PollQuery>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
    if body.len() > state.settings.max_frame_bytes {
        let err = AppError::too_large(format!(
            "frame is {} bytes; the limit is {}",
            body.len(),
            state.settings.max_frame_bytes
        ));
        return Ok(with_cors(
            &req,
            &site,
            frames_response(&[error_frame(&err, None)]),
        ));
    }
    let frames = match std::str::from_utf8(&body) {
        Err(_) => vec![error_frame(
            &AppError::bad_request("frame is not valid UTF-8"),
            None,
        )],
        Ok(text) => match ClientFrame::decode(text) {
            Err(e) => vec![error_frame(
                &AppError::bad_request(e.message),
                e.client_ref.as_deref(),
            )],
            Ok(frame) => answer(&state, &site, &visitor, frame).await,
        },
    };
    Ok(with_cors(&req, &site, frames_response(&frames)))
}

/// What the socket would answer to `frame`.
async fn answer(
    state: &AppState,
    site: &Site,
    visitor: &Visitor,
    frame: ClientFrame,
) -> Vec<String> {
    let visitor_id = visitor.id;
    let latest = async || {
        state
            .db
            .run(async |conn| crate::db::conversations::latest_for_visitor(conn, visitor_id).await)
            .await
    };
    match frame {
        ClientFrame::Ping {} => vec![ServerFrame::Pong {}.encode()],
        ClientFrame::MessageSend {
            client_msg_id,
            body,
            attachments,
            ..
        } => {
            let cref: String = client_msg_id
                .chars()
                .take(limits::MAX_CLIENT_MSG_ID)
                .collect();
            match send_message(state, site, visitor, &client_msg_id, &body, attachments).await {
                Ok(frames) => frames,
                Err(e) => vec![error_frame(&e, Some(&cref))],
            }
        }
        ClientFrame::Resume { after_seq, .. } => {
            let result = async {
                let Some(conv) = latest().await? else {
                    return Ok(ServerFrame::MessageHistory {
                        conversation_id: None,
                        messages: &[],
                        more: false,
                    }
                    .encode());
                };
                let id = conv.id;
                let (messages, more) = state
                    .db
                    .run(async |conn| {
                        crate::db::messages::after(
                            conn,
                            id,
                            after_seq.max(0),
                            crate::db::messages::MAX_PAGE,
                            false,
                        )
                        .await
                    })
                    .await?;
                Ok::<_, AppError>(
                    ServerFrame::MessageHistory {
                        conversation_id: Some(id),
                        messages: &messages,
                        more,
                    }
                    .encode(),
                )
            }
            .await;
            vec![result.unwrap_or_else(|e| error_frame(&e, None))]
        }
        ClientFrame::Typing { on, .. } => match latest().await {
            Ok(Some(c)) => {
                state.bus.publish(Event::Typing {
                    conversation_id: c.id,
                    sender_type: SenderType::Visitor,
                    sender_id: Some(visitor_id),
                    on,
                });
                vec![]
            }
            Ok(None) => vec![],
            Err(e) => vec![error_frame(&e, None)],
        },
        ClientFrame::Read { up_to_seq, .. } => {
            if up_to_seq < 0 {
                return vec![error_frame(
                    &AppError::bad_request("up_to_seq must be ≥ 0"),
                    None,
                )];
            }
            match latest().await {
                Ok(Some(c)) => {
                    state.bus.publish(Event::Read {
                        conversation_id: c.id,
                        sender_type: SenderType::Visitor,
                        sender_id: Some(visitor_id),
                        up_to_seq,
                    });
                    vec![]
                }
                Ok(None) => vec![],
                Err(e) => vec![error_frame(&e, None)],
            }
        }
        ClientFrame::ProfileUpdate {
            name,
            email,
            attributes,
        } => match update_profile(state, visitor_id, name, email, attributes).await {
            Ok(v) => {
                crate::presence::profile_changed(state, &v);
                vec![ServerFrame::VisitorUpdated { visitor: &v }.encode()]
            }
            Err(e) => vec![error_frame(&e, None)],
        },
        ClientFrame::Rating { score, comment } => {
            match rate(state, visitor_id, score, comment).await {
                Ok(conv) => vec![ServerFrame::RatingAck {
                    conversation_id: conv,
                    score,
                }
                .encode()],
                Err(e) => vec![error_frame(&e, None)],
            }
        }
    }
}

/// A visitor message through the room and the writer, as a socket send.
async fn send_message(
    state: &AppState,
    site: &Site,
    visitor: &Visitor,
    client_msg_id: &str,
    body: &str,
    attachments: Vec<Uuid>,
) -> AppResult<Vec<String>> {
    limits::validate_client_msg_id(client_msg_id)?;
    let body = limits::validate_body_with_attachments(body, attachments.len())?;
    if !take_send_token(state, visitor.id) {
        state
            .metrics
            .rate_limited
            .with_label_values(&["visitor_send"])
            .inc();
        return Err(AppError::rate_limited("sending too fast; slow down"));
    }
    let (site_id, visitor_id) = (site.id, visitor.id);
    let (conv, is_new) = state
        .db
        .run(async |conn| {
            crate::db::attachments::check_visitor_files(conn, visitor_id, &attachments).await?;
            crate::db::conversations::get_or_create(conn, site_id, visitor_id).await
        })
        .await?;
    if is_new {
        state.bus.publish(Event::ConversationCreated {
            conversation: conv.clone(),
        });
        state.assign.notify_one();
    }
    let room = room_for(state, conv.id, None).await?;
    let outcome = room
        .send(Post(NewMessage {
            conversation_id: conv.id,
            sender_type: SenderType::Visitor,
            sender_id: Some(visitor_id),
            private: false,
            body,
            client_msg_id: Some(client_msg_id.to_string()),
            attachments,
            origin: None,
        }))
        .await??;
    let ack = ServerFrame::MessageAck {
        client_msg_id,
        message: outcome.message(),
    }
    .encode();
    // The conversation as it is now (assigned meanwhile, perhaps), before the ack.
    let id = conv.id;
    let fresh = state
        .db
        .run(async |conn| crate::db::conversations::get(conn, id).await)
        .await
        .ok()
        .flatten()
        .unwrap_or(conv);
    Ok(vec![conversation_frame(&fresh), ack])
}

async fn update_profile(
    state: &AppState,
    id: Uuid,
    name: Option<String>,
    email: Option<String>,
    attributes: Option<serde_json::Value>,
) -> AppResult<Visitor> {
    let name = limits::validate_profile_field("name", name.as_deref())?;
    let email = limits::validate_profile_field("email", email.as_deref())?;
    if email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(AppError::bad_request("email is not an email address"));
    }
    let attributes = limits::validate_attributes(attributes)?;
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

async fn rate(
    state: &AppState,
    visitor_id: Uuid,
    score: i64,
    comment: Option<String>,
) -> AppResult<Uuid> {
    let (stars, comment) = crate::domain::csat::validate(score, comment.as_deref())?;
    let conv = state
        .db
        .run(async |conn| crate::db::conversations::latest_for_visitor(conn, visitor_id).await)
        .await?
        .ok_or_else(|| AppError::conflict("there is no conversation to rate"))?;
    let id = conv.id;
    let window = state.settings.csat_window();
    let updated = state
        .db
        .run(async |conn| crate::db::csat::rate(conn, id, visitor_id, stars, comment, window).await)
        .await?;
    state.bus.publish(Event::ConversationUpdated {
        conversation: updated,
    });
    Ok(id)
}

/// A poll's place in a room: frames the room delivers go to the waiting request.
struct PollInbox {
    frames: mpsc::UnboundedSender<ByteString>,
    handle: SessionHandle,
}

impl Actor for PollInbox {
    type Context = Context<Self>;
}

impl Handler<Outbound> for PollInbox {
    type Result = ();
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(text) => {
                self.handle.taken();
                let _ = self.frames.send(text);
            }
            Outbound::Close(..) => ctx.stop(),
        }
    }
}

/// Leaves the room and stops the inbox however the poll ends (answered, or the client
/// went away and the request was dropped).
struct Membership {
    room: Addr<Room>,
    inbox: Addr<PollInbox>,
    session_id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.room.do_send(Leave {
            session_id: self.session_id,
        });
        self.inbox
            .do_send(Outbound::Close(CloseCode::Normal, "poll answered"));
    }
}

/// Marks the visitor online while a poll lasts (and for the grace period after).
struct Online {
    state: AppState,
    visitor_id: Uuid,
    link_id: u64,
}

impl Drop for Online {
    fn drop(&mut self) {
        crate::presence::disconnected(&self.state, self.visitor_id, self.link_id);
    }
}

/// `GET /api/visitor/poll`: the conversation's state, then messages after `after_seq`, or
/// the next live frames.
pub async fn poll(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PollQuery>,
) -> AppResult<HttpResponse> {
    let deadline = tokio::time::Instant::now() + POLL_WAIT;
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
    let after_seq = q.after_seq.unwrap_or(0);
    if after_seq < 0 {
        return Err(AppError::bad_request("after_seq must be ≥ 0"));
    }
    let ev = q.ev.unwrap_or(0).max(0);
    let visitor_id = visitor.id;

    // Online while the poll lasts; woken when a conversation is made for the visitor.
    let wake = Arc::new(Notify::new());
    let woken = wake.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let link_id = state.next_session_id();
    crate::presence::connected(&state, &site, &visitor, link_id, Link::Poll(wake.clone()));
    let _online = Online {
        state: state.get_ref().clone(),
        visitor_id,
        link_id,
    };

    let latest = async || {
        state
            .db
            .run(async |conn| crate::db::conversations::latest_for_visitor(conn, visitor_id).await)
            .await
    };
    let conv = match latest().await? {
        Some(c) => c,
        None => {
            // Nothing to wait for until the visitor's first message (whose answer tells the
            // widget to poll again at once) or an agent's greeting (which wakes us).
            let _ = tokio::time::timeout_at(deadline, woken).await;
            match latest().await? {
                Some(c) => c,
                None => return Ok(with_cors(&req, &site, frames_response_ev(&[], Some(ev)))),
            }
        }
    };

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id, limit) = (state.next_session_id(), state.settings.outgoing_queue);
    let ctx = Context::<PollInbox>::new();
    let handle = SessionHandle::new(id, ctx.address().recipient(), limit);
    let inbox = ctx.run(PollInbox {
        frames: tx,
        handle: handle.clone(),
    });
    let room = room_for(&state, conv.id, Some(handle)).await?;
    let _membership = Membership {
        room,
        inbox,
        session_id: id,
    };

    // Joined first, then read: a message committed in between is in one or the other.
    let conv_id = conv.id;
    let (messages, more) = state
        .db
        .run(async |conn| {
            crate::db::messages::after(
                conn,
                conv_id,
                after_seq,
                crate::db::messages::MAX_PAGE,
                false,
            )
            .await
        })
        .await?;
    let mut frames = vec![conversation_frame(&conv)];
    let (signals, next_ev) = state.bus.signals.since(conv_id, ev);
    if !messages.is_empty() || !signals.is_empty() {
        if !messages.is_empty() {
            frames.push(
                ServerFrame::MessageHistory {
                    conversation_id: Some(conv_id),
                    messages: &messages,
                    more,
                }
                .encode(),
            );
        }
        frames.extend(signals);
        return Ok(with_cors(
            &req,
            &site,
            frames_response_ev(&frames, Some(next_ev)),
        ));
    }
    if let Ok(Some(first)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        frames.push(first.to_string());
        while frames.len() < MAX_FRAMES {
            match tokio::time::timeout(GATHER, rx.recv()).await {
                Ok(Some(next)) => frames.push(next.to_string()),
                _ => break,
            }
        }
    }
    // Signals that came meanwhile (live, so usually in `frames` already): move the cursor
    // past them, adding any this poll did not carry.
    let (late, next_ev) = state.bus.signals.since(conv_id, ev);
    for f in late {
        if !frames.contains(&f) {
            frames.push(f);
        }
    }
    Ok(with_cors(
        &req,
        &site,
        frames_response_ev(&frames, Some(next_ev)),
    ))
}
