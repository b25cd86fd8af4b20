//! The event bus: how a committed change reaches every client that should see it.
//!
//! [`Bus::publish`] delivers an event to this node's sessions at once — conversation events
//! to the conversation's [`Room`](crate::actors::room::Room) (its visitor sessions) and to
//! every agent session — and, with Redis configured, publishes it on
//! `<prefix>:events` so every other node does the same for its own sessions. Redis pub/sub
//! is lossy: clients close gaps with `resume`; nothing here invents order.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Addr;
use bytestring::ByteString;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::room::{Deliver, Room};
use crate::actors::session::SessionHandle;
use crate::metrics::Metrics;
use crate::presence::{OnlineVisitor, Presence};
use crate::protocol::{AgentStatus, Conversation, Message, SenderType, ServerFrame};
use crate::redis_client::Redis;

/// Something that happened, already committed where it needs to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    MessageCreated {
        message: Message,
        /// The session that sent it (it got a `message.ack` instead).
        origin: Option<u64>,
        #[serde(default)]
        origin_node: Option<String>,
    },
    ConversationCreated {
        conversation: Conversation,
    },
    ConversationUpdated {
        conversation: Conversation,
    },
    Typing {
        conversation_id: Uuid,
        sender_type: SenderType,
        sender_id: Option<Uuid>,
        on: bool,
    },
    Read {
        conversation_id: Uuid,
        sender_type: SenderType,
        sender_id: Option<Uuid>,
        up_to_seq: i64,
    },
    Presence {
        agent_id: Uuid,
        status: AgentStatus,
    },
    /// Visitors arrived or moved to another page (the agents' "online now" list), batched
    /// per node and tick so a crowd arriving does not flood agents' sockets.
    VisitorsOnline {
        visitors: Vec<OnlineVisitor>,
    },
    /// Visitors whose last connection on any node closed.
    VisitorsOffline {
        visitor_ids: Vec<Uuid>,
    },
    /// An agent's tokens were revoked (logout everywhere, disabled): close its sockets.
    AgentRevoked {
        agent_id: Uuid,
        token_hash: Option<String>,
    },
}

impl Event {
    pub fn conversation_id(&self) -> Option<Uuid> {
        match self {
            Event::MessageCreated { message, .. } => Some(message.conversation_id),
            Event::ConversationCreated { conversation }
            | Event::ConversationUpdated { conversation } => Some(conversation.id),
            Event::Typing {
                conversation_id, ..
            }
            | Event::Read {
                conversation_id, ..
            } => Some(*conversation_id),
            Event::Presence { .. }
            | Event::AgentRevoked { .. }
            | Event::VisitorsOnline { .. }
            | Event::VisitorsOffline { .. } => None,
        }
    }

    /// The frame agents receive for this event, if any.
    pub fn agent_frame(&self) -> Option<String> {
        let text = match self {
            Event::MessageCreated { message, .. } => ServerFrame::MessageCreated {
                conversation_id: message.conversation_id,
                message,
            }
            .encode(),
            Event::ConversationCreated { conversation } => ServerFrame::ConversationCreated {
                conversation_id: conversation.id,
                conversation,
            }
            .encode(),
            Event::ConversationUpdated { conversation } => ServerFrame::ConversationUpdated {
                conversation_id: conversation.id,
                conversation,
            }
            .encode(),
            Event::Typing {
                conversation_id,
                sender_type,
                sender_id,
                on,
            } => ServerFrame::Typing {
                conversation_id: *conversation_id,
                on: *on,
                sender_type: *sender_type,
                sender_id: *sender_id,
            }
            .encode(),
            Event::Read {
                conversation_id,
                sender_type,
                sender_id,
                up_to_seq,
            } => ServerFrame::MessageRead {
                conversation_id: *conversation_id,
                up_to_seq: *up_to_seq,
                sender_type: *sender_type,
                sender_id: *sender_id,
            }
            .encode(),
            Event::Presence { agent_id, status } => ServerFrame::Presence {
                agent_id: *agent_id,
                status: *status,
            }
            .encode(),
            Event::VisitorsOnline { visitors } => ServerFrame::VisitorOnline { visitors }.encode(),
            Event::VisitorsOffline { visitor_ids } => {
                ServerFrame::VisitorOffline { visitor_ids }.encode()
            }
            Event::AgentRevoked { .. } => return None,
        };
        Some(text)
    }

    /// The frame a visitor of the conversation receives, if any. Private notes and the
    /// visitor's own typing and read receipts never reach visitors.
    pub fn visitor_frame(&self) -> Option<String> {
        match self {
            Event::MessageCreated { message, .. } if !message.private => Some(
                ServerFrame::MessageCreated {
                    conversation_id: message.conversation_id,
                    message,
                }
                .encode(),
            ),
            Event::ConversationUpdated { conversation }
            | Event::ConversationCreated { conversation } => Some(
                ServerFrame::ConversationUpdated {
                    conversation_id: conversation.id,
                    conversation,
                }
                .encode(),
            ),
            Event::Typing {
                conversation_id,
                sender_type,
                on,
                ..
            } if *sender_type != SenderType::Visitor => Some(
                ServerFrame::Typing {
                    conversation_id: *conversation_id,
                    on: *on,
                    sender_type: *sender_type,
                    sender_id: None,
                }
                .encode(),
            ),
            Event::Read {
                conversation_id,
                sender_type,
                up_to_seq,
                ..
            } if *sender_type != SenderType::Visitor => Some(
                ServerFrame::MessageRead {
                    conversation_id: *conversation_id,
                    up_to_seq: *up_to_seq,
                    sender_type: *sender_type,
                    sender_id: None,
                }
                .encode(),
            ),
            _ => None,
        }
    }
}

/// Rooms alive on this node, by conversation. Written by the dispatcher, read by the bus.
pub type RoomRegistry = Arc<RwLock<HashMap<Uuid, Addr<Room>>>>;

/// An agent WebSocket on this node.
#[derive(Clone)]
pub struct AgentConn {
    pub agent_id: Uuid,
    pub token_hash: String,
    pub handle: SessionHandle,
}

/// Agent sessions on this node, by session id.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    inner: Arc<RwLock<HashMap<u64, AgentConn>>>,
}

impl AgentRegistry {
    pub fn insert(&self, conn: AgentConn) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(conn.handle.id, conn);
        }
    }
    pub fn remove(&self, session_id: u64) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(&session_id);
        }
    }
    pub fn len(&self) -> usize {
        self.inner.read().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Agent ids connected to this node.
    pub fn agent_ids(&self) -> Vec<Uuid> {
        self.inner
            .read()
            .map(|m| m.values().map(|c| c.agent_id).collect())
            .unwrap_or_default()
    }
    fn for_each(&self, mut f: impl FnMut(&AgentConn)) {
        if let Ok(map) = self.inner.read() {
            map.values().for_each(&mut f);
        }
    }
}

#[derive(Clone)]
struct RedisBus {
    redis: Redis,
    channel: String,
}

/// Handle to the bus; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    pub node_id: Arc<str>,
    pub rooms: RoomRegistry,
    pub agents: AgentRegistry,
    /// Visitors connected to this node (see [`crate::presence`]).
    pub presence: Presence,
    /// Agents' latest typing and read receipts, for long-polling visitors.
    pub signals: Signals,
    redis: Option<RedisBus>,
    cache: Option<crate::actors::cache::Cache>,
    metrics: Metrics,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    event: Event,
}

impl Bus {
    pub fn new(node_id: &str, metrics: Metrics) -> Bus {
        Bus {
            node_id: node_id.into(),
            rooms: Arc::default(),
            agents: AgentRegistry::default(),
            presence: Presence::default(),
            signals: Signals::new(),
            redis: None,
            cache: None,
            metrics,
        }
    }

    /// Lets committed messages invalidate the cached history pages of this node.
    pub fn with_cache(mut self, cache: crate::actors::cache::Cache) -> Bus {
        self.cache = Some(cache);
        self
    }

    /// Enables cross-node fan-out through Redis and starts the subscriber task (which
    /// reconnects by itself when Redis goes away and comes back).
    pub fn with_redis(mut self, redis: Redis, redis_url: &str, prefix: &str) -> Bus {
        let channel = format!("{prefix}:events");
        self.redis = Some(RedisBus {
            redis,
            channel: channel.clone(),
        });
        let me = self.clone();
        let url = redis_url.to_string();
        actix_web::rt::spawn(async move { me.subscribe_forever(url, channel).await });
        self
    }

    /// Delivers locally and to every other node.
    pub fn publish(&self, event: Event) {
        self.deliver_local(&event);
        if let Some(redis) = &self.redis {
            let envelope = Envelope {
                node: self.node_id.to_string(),
                event,
            };
            let payload = match serde_json::to_string(&envelope) {
                Ok(p) => p,
                Err(e) => {
                    log::error!("bus: cannot encode event: {e}");
                    return;
                }
            };
            if !redis.redis.usable() {
                // Redis is down: other nodes' clients close the gap with `resume`.
                self.metrics.bus_publish_errors.inc();
                return;
            }
            let redis = redis.clone();
            let metrics = self.metrics.clone();
            actix_web::rt::spawn(async move {
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&redis.channel).arg(payload);
                if redis.redis.query::<i64>("publish", &cmd).await.is_none() {
                    metrics.bus_publish_errors.inc();
                }
            });
        }
    }

    /// Hands an event to this node's rooms and agent sessions.
    pub fn deliver_local(&self, event: &Event) {
        if let Event::AgentRevoked {
            agent_id,
            token_hash,
        } = event
        {
            self.agents.for_each(|c| {
                if c.agent_id == *agent_id && token_hash.as_ref().is_none_or(|t| *t == c.token_hash)
                {
                    c.handle.revoke();
                }
            });
            return;
        }
        if let (Event::MessageCreated { message, .. }, Some(cache)) = (event, &self.cache) {
            cache.forget_history(message.conversation_id);
        }
        match event {
            // A conversation made for a visitor (an agent's greeting, another tab's first
            // message) reaches the visitor's sessions that had none.
            Event::ConversationCreated { conversation } => self.presence.adopt(conversation),
            Event::Typing { .. } | Event::Read { .. } => self.signals.record(event),
            _ => {}
        }
        if let Some(conv) = event.conversation_id() {
            let room = self.rooms.read().ok().and_then(|m| m.get(&conv).cloned());
            if let Some(room) = room {
                if let Some(text) = event.visitor_frame() {
                    let origin = match event {
                        Event::MessageCreated {
                            origin,
                            origin_node,
                            ..
                        } if origin_node.as_deref() == Some(&*self.node_id) => *origin,
                        _ => None,
                    };
                    room.do_send(Deliver {
                        text: ByteString::from(text),
                        origin,
                    });
                }
            }
        }
        if self.agents.is_empty() {
            return;
        }
        if let Some(text) = event.agent_frame() {
            let text = ByteString::from(text);
            let (skip_agent, origin) = match event {
                Event::Typing { sender_id, .. } | Event::Read { sender_id, .. } => {
                    (*sender_id, None)
                }
                Event::MessageCreated {
                    origin,
                    origin_node,
                    ..
                } if origin_node.as_deref() == Some(&*self.node_id) => (None, *origin),
                _ => (None, None),
            };
            self.agents.for_each(|c| {
                if Some(c.agent_id) == skip_agent || Some(c.handle.id) == origin {
                    return;
                }
                c.handle.push(text.clone());
            });
        }
    }

    async fn subscribe_forever(self, url: String, channel: String) {
        const FIRST_RETRY: Duration = Duration::from_millis(200);
        let mut backoff = FIRST_RETRY;
        loop {
            match self.subscribe_once(&url, &channel).await {
                Ok(()) => {
                    log::warn!("bus: Redis subscription ended; reconnecting");
                    // It was up: this outage starts its back-off afresh (else, after a few
                    // outages over a node's life, every later one kept the 5 s maximum).
                    backoff = FIRST_RETRY;
                }
                Err(e) => log::warn!("bus: Redis subscription failed: {e}; retrying"),
            }
            self.metrics.bus_reconnects.inc();
            actix_web::rt::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn subscribe_once(&self, url: &str, channel: &str) -> Result<(), String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
        log::info!("bus: subscribed to {channel}");
        let mut stream = pubsub.on_message();
        while let Some(msg) = stream.next().await {
            let payload: String = match msg.get_payload() {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("bus: unreadable payload: {e}");
                    continue;
                }
            };
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(env) if env.node != *self.node_id => self.deliver_local(&env.event),
                Ok(_) => {}
                Err(e) => log::warn!("bus: undecodable event: {e}"),
            }
        }
        Ok(())
    }
}

/// The latest typing indicator and read receipt of agents in each conversation, kept by
/// every node from the events it delivers. A socket gets these live; a long-polling visitor
/// who was between two polls when one happened gets it with its next poll (`ev` cursor:
/// the newest signal it has had, in this node's milliseconds). Signals are not stored, so
/// they are kept only for a while.
#[derive(Clone)]
pub struct Signals {
    cache: moka::sync::Cache<Uuid, SignalState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SignalState {
    /// (on, sender_type, at_ms)
    typing: Option<(bool, SenderType, i64)>,
    /// (up_to_seq, sender_type, at_ms)
    read: Option<(i64, SenderType, i64)>,
}

/// A typing "on" older than this is not replayed (the widget hides it after 6 s anyway).
const TYPING_FRESH_MS: i64 = 5_000;

impl Signals {
    fn new() -> Signals {
        Signals {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    fn record(&self, event: &Event) {
        let now = chrono::Utc::now().timestamp_millis();
        match event {
            Event::Typing {
                conversation_id,
                sender_type,
                on,
                ..
            } if *sender_type != SenderType::Visitor => {
                let mut s = self.cache.get(conversation_id).unwrap_or_default();
                s.typing = Some((*on, *sender_type, now));
                self.cache.insert(*conversation_id, s);
            }
            Event::Read {
                conversation_id,
                sender_type,
                up_to_seq,
                ..
            } if *sender_type != SenderType::Visitor => {
                let mut s = self.cache.get(conversation_id).unwrap_or_default();
                let highest = s.read.map_or(*up_to_seq, |(seq, ..)| seq.max(*up_to_seq));
                s.read = Some((highest, *sender_type, now));
                self.cache.insert(*conversation_id, s);
            }
            _ => {}
        }
    }

    /// The visitor frames of signals newer than `ev`, and the cursor to send next time.
    pub fn since(&self, conversation_id: Uuid, ev: i64) -> (Vec<String>, i64) {
        let Some(s) = self.cache.get(&conversation_id) else {
            return (Vec::new(), ev);
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mut frames = Vec::new();
        let mut next = ev;
        if let Some((up_to_seq, sender_type, at)) = s.read {
            if at > ev {
                frames.push(
                    ServerFrame::MessageRead {
                        conversation_id,
                        up_to_seq,
                        sender_type,
                        sender_id: None,
                    }
                    .encode(),
                );
                next = next.max(at);
            }
        }
        if let Some((on, sender_type, at)) = s.typing {
            if at > ev {
                if !on || now - at < TYPING_FRESH_MS {
                    frames.push(
                        ServerFrame::Typing {
                            conversation_id,
                            on,
                            sender_type,
                            sender_id: None,
                        }
                        .encode(),
                    );
                }
                next = next.max(at);
            }
        }
        (frames, next)
    }
}
