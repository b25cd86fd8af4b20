//! `AppState`: the node's shared handles, one `Arc` so each WebSocket session pays for a
//! single pointer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::actors::cache::Cache;
use crate::actors::dispatcher::Dispatcher;
use crate::actors::metrics::MetricsActor;
use crate::actors::session::SessionHandle;
use crate::bus::{Bus, Event};
use crate::config::Settings;
use crate::db::writer::MessageWriter;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

/// An agent counts as available when seen within this window (SPEC §4).
pub const AVAILABLE_WINDOW_SECS: i64 = 60;
/// Agent activity is written to PostgreSQL at most this often per agent.
const SEEN_WRITE_GAP_SECS: i64 = 15;

pub struct Inner {
    pub settings: Settings,
    pub node_id: String,
    pub db: Db,
    pub redis: Option<crate::redis_client::Redis>,
    pub bus: Bus,
    pub writer: MessageWriter,
    pub dispatcher: Addr<Dispatcher>,
    pub cache: Cache,
    pub metrics: Metrics,
    pub metrics_actor: Addr<MetricsActor>,
    /// Wakes the assigner (new conversation, agent online, capacity freed).
    pub assign: Arc<Notify>,
    pub sessions: SessionRegistry,
    /// Where attachments' bytes live (issue 9).
    pub storage: Arc<dyn crate::storage::AttachmentStore>,
    session_ids: AtomicU64,
    /// Agents whose activity was written recently (saves a write per request).
    seen_recently: moka::sync::Cache<Uuid, ()>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        node_id: String,
        db: Db,
        redis: Option<crate::redis_client::Redis>,
        bus: Bus,
        writer: MessageWriter,
        dispatcher: Addr<Dispatcher>,
        cache: Cache,
        metrics: Metrics,
        metrics_actor: Addr<MetricsActor>,
        assign: Arc<Notify>,
        storage: Arc<dyn crate::storage::AttachmentStore>,
    ) -> AppState {
        AppState(Arc::new(Inner {
            sessions: SessionRegistry::new(
                settings.max_connections,
                settings.max_connections_per_ip,
            ),
            settings,
            node_id,
            db,
            redis,
            bus,
            writer,
            dispatcher,
            cache,
            metrics,
            metrics_actor,
            assign,
            storage,
            session_ids: AtomicU64::new(1),
            seen_recently: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(SEEN_WRITE_GAP_SECS as u64))
                .build(),
        }))
    }

    pub fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn available_window(&self) -> chrono::Duration {
        chrono::Duration::seconds(AVAILABLE_WINDOW_SECS)
    }

    /// Records agent activity (an open WebSocket or an authenticated request). When the
    /// agent had dropped out of availability, the assigner gets a look.
    pub async fn mark_agent_seen(&self, agent_id: Uuid) {
        if self.seen_recently.contains_key(&agent_id) {
            return;
        }
        self.seen_recently.insert(agent_id, ());
        let gap = chrono::Duration::seconds(SEEN_WRITE_GAP_SECS);
        match self
            .db
            .run(async |conn| crate::db::agents::touch_seen(conn, agent_id, gap).await)
            .await
        {
            Ok(true) => self.assign.notify_one(),
            Ok(false) => {}
            Err(e) => {
                self.seen_recently.invalidate(&agent_id);
                log::debug!("cannot record agent activity: {e}");
            }
        }
    }

    /// Runs the assigner: on every wake-up and every few seconds (agents' availability
    /// also changes by time passing), hand waiting conversations to available agents.
    pub fn spawn_assigner(&self) {
        let state = self.clone();
        actix_web::rt::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(5), state.assign.notified()).await;
                if let Err(e) = state.assign_once().await {
                    log::warn!("assigner: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    }

    pub async fn assign_once(&self) -> AppResult<usize> {
        let ids = self
            .db
            .run(async |conn| {
                // Outside business hours a site's queue waits; the assigner's periodic run
                // picks it up within seconds of opening time.
                let closed = crate::db::sites::closed_now(conn, chrono::Utc::now()).await?;
                crate::db::conversations::assign_waiting(conn, AVAILABLE_WINDOW_SECS, &closed).await
            })
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.metrics.assignments.inc_by(ids.len() as u64);
        let convs = self
            .db
            .run(async |conn| crate::db::conversations::get_many(conn, &ids).await)
            .await?;
        for c in convs {
            self.bus
                .publish(Event::ConversationUpdated { conversation: c });
        }
        Ok(ids.len())
    }
}

/// Every WebSocket session on this node, with per-node and per-IP connection limits.
pub struct SessionRegistry {
    inner: Mutex<Sessions>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Default)]
struct Sessions {
    handles: HashMap<u64, SessionHandle>,
    per_ip: HashMap<IpAddr, usize>,
    reserved: usize,
}

/// A connection slot, released on drop unless handed to a session.
pub struct ConnectionPermit {
    registry: Arc<Inner>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.registry.sessions.inner.lock() {
            s.reserved = s.reserved.saturating_sub(1);
            if let Some(ip) = self.ip {
                if let Some(n) = s.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        s.per_ip.remove(&ip);
                    }
                }
            }
        }
    }
}

impl SessionRegistry {
    fn new(max_total: usize, max_per_ip: usize) -> SessionRegistry {
        SessionRegistry {
            inner: Mutex::new(Sessions::default()),
            max_total,
            max_per_ip,
        }
    }

    pub fn insert(&self, handle: SessionHandle) {
        if let Ok(mut s) = self.inner.lock() {
            s.handles.insert(handle.id, handle);
        }
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut s) = self.inner.lock() {
            s.handles.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.handles.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open session (for a graceful stop).
    pub fn all(&self) -> Vec<SessionHandle> {
        self.inner
            .lock()
            .map(|s| s.handles.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl AppState {
    /// Reserves a connection slot for a WebSocket from `ip`; the permit lives as long as
    /// the connection (it is moved into the session).
    pub fn admit(&self, ip: Option<IpAddr>) -> AppResult<ConnectionPermit> {
        let reg = &self.sessions;
        let mut s = reg
            .inner
            .lock()
            .map_err(|_| AppError::internal("session registry poisoned"))?;
        if s.reserved >= reg.max_total {
            return Err(AppError::unavailable("this node is full; try another"));
        }
        if let Some(ip) = ip {
            let n = s.per_ip.entry(ip).or_insert(0);
            if *n >= reg.max_per_ip {
                return Err(AppError::rate_limited(
                    "too many connections from this address",
                ));
            }
            *n += 1;
        }
        s.reserved += 1;
        Ok(ConnectionPermit {
            registry: self.0.clone(),
            ip,
        })
    }
}
