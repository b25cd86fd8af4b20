//! The worker: side effects driven by the durable event stream ([`crate::db::events`]).
//!
//! Runs inside `kefu serve` (unless `KEFU_WORKER=false`) and as its own process, `kefu
//! worker`; any number of them may run against one database:
//!
//! - **relay**: reads the stream after its cursor (`event_cursors` row `kefu.worker`,
//!   locked `FOR UPDATE SKIP LOCKED`, so one worker at a time moves it) and queues a
//!   webhook delivery per matching webhook, in the transaction that moves the cursor: an
//!   event is queued exactly once, whoever crashes when.
//! - **delivery**: claims due deliveries (`FOR UPDATE SKIP LOCKED` plus a hold that expires
//!   if the worker dies), POSTs them signed with HMAC-SHA256, and records the outcome;
//!   failures are retried with exponential backoff from the table, so retries survive
//!   restarts.
//! - **housekeeping**: resolves conversations idle past their site's limit, with a system
//!   message through the message writer (so `seq` and live fan-out are as for any message),
//!   and prunes events past retention that every cursor has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::{Bus, Event};
use crate::config::Settings;
use crate::db::webhooks::{self, Claimed, NewDelivery};
use crate::db::writer::{MessageWriter, NewMessage};
use crate::db::{events, Db};
use crate::error::{AppError, AppResult};
use crate::protocol::SenderType;

/// The worker's own cursor in `event_cursors`.
pub const CURSOR: &str = "kefu.worker";
/// Events relayed per transaction.
const RELAY_BATCH: i64 = 500;
/// Deliveries sent at once by one worker.
const DELIVERY_BATCH: i64 = 32;
/// Longest wait between two attempts of one delivery.
const MAX_RETRY_SECS: f64 = 3600.0;
/// How often idle conversations are looked for.
const AUTO_RESOLVE_EVERY: Duration = Duration::from_secs(2);
/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What a worker needs; `kefu serve` hands over its own handles.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: Db,
    pub writer: MessageWriter,
    pub bus: Bus,
    pub settings: Settings,
    /// Woken when conversations are resolved (capacity freed), if an assigner runs here.
    pub assign: Option<Arc<Notify>>,
}

/// The running worker's tasks; dropping the handle leaves them running.
pub struct WorkerHandle {
    tasks: Vec<actix_web::rt::task::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops at once, wherever the tasks are (what a crash does: every step is safe to
    /// interrupt — queued work stays in PostgreSQL for the next worker).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the worker's loops on the current actix runtime.
pub fn start(ctx: WorkerContext) -> AppResult<WorkerHandle> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(
            ctx.settings.webhook_timeout_secs.max(1),
        ))
        .connect_timeout(Duration::from_secs(
            ctx.settings.webhook_timeout_secs.clamp(1, 10),
        ))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kefu-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AppError::internal(format!("webhook HTTP client: {e}")))?;
    let worker = Arc::new(Worker {
        ctx,
        http,
        deliveries: Arc::new(Notify::new()),
    });
    let tasks = vec![
        actix_web::rt::spawn(worker.clone().relay_forever()),
        actix_web::rt::spawn(worker.clone().deliver_forever()),
        actix_web::rt::spawn(worker.housekeeping_forever()),
    ];
    log::info!("worker started (webhooks, auto-resolve, event retention)");
    Ok(WorkerHandle { tasks })
}

/// `kefu worker`: a process running only the worker, with its own pool, bus and message
/// writer (auto-resolve messages reach every node's clients through Redis).
pub struct WorkerProcess {
    handle: WorkerHandle,
    writer: MessageWriter,
}

impl WorkerProcess {
    /// Migrates, connects and starts the worker. Call inside an actix `System`.
    pub async fn start(settings: Settings) -> Result<WorkerProcess, String> {
        crate::db::migrate(&settings.database_url)?;
        let metrics = crate::metrics::Metrics::new();
        let db = Db::new(&settings.database_url, 4, settings.db_timeout())
            .map_err(|e| e.message)?
            .with_slow_log(Duration::from_millis(settings.slow_ms), metrics.clone());
        let node_id = format!("worker-{}", settings.node_name());
        let mut bus = Bus::new(&node_id, metrics.clone());
        if let Some(url) = &settings.redis_url {
            let redis = crate::redis_client::Redis::new(
                crate::server::redis_pool(url)?,
                metrics.clone(),
                Duration::from_millis(settings.slow_ms),
            );
            bus = bus.with_redis(redis, url, &settings.redis_prefix);
        } else {
            log::warn!("REDIS_URL is not set: auto-resolve messages reach other nodes' clients only when they resume");
        }
        let writer = MessageWriter::start(
            db.clone(),
            bus.clone(),
            Arc::new(Notify::new()),
            metrics,
            1,
            settings.writer_batch,
        );
        let handle = start(WorkerContext {
            db,
            writer: writer.clone(),
            bus,
            settings,
            assign: None,
        })
        .map_err(|e| e.message)?;
        Ok(WorkerProcess { handle, writer })
    }

    /// Stops the loops and commits any auto-resolve message still queued.
    pub async fn stop(self, within: Duration) {
        self.handle.abort();
        self.writer.flush(within).await;
    }
}

struct Worker {
    ctx: WorkerContext,
    http: reqwest::Client,
    /// Wakes the delivery loop after the relay queued something.
    deliveries: Arc<Notify>,
}

impl Worker {
    fn poll(&self) -> Duration {
        Duration::from_millis(self.ctx.settings.worker_poll_ms.max(10))
    }

    async fn relay_forever(self: Arc<Self>) {
        loop {
            let woken = self.ctx.bus.stream_signal.notified();
            match self.relay_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => log::warn!("worker: relay: {}", e.message),
            }
            let _ = tokio::time::timeout(self.poll(), woken).await;
        }
    }

    /// Relays one batch of events into the delivery queue; answers how many events.
    async fn relay_once(&self) -> AppResult<usize> {
        let (relayed, queued) = self
            .ctx
            .db
            .run(async |conn| {
                use diesel_async::AsyncConnection;
                diesel_async::RunQueryDsl::execute(
                    diesel::sql_query(
                        "INSERT INTO event_cursors (name, after_id) VALUES ($1, 0) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind::<diesel::sql_types::Text, _>(CURSOR),
                    conn,
                )
                .await?;
                conn.transaction(async |conn| {
                    let Some(after) = lock_cursor(conn).await? else {
                        return Ok((0, 0)); // another worker is relaying
                    };
                    let batch = events::read_after(conn, after, RELAY_BATCH).await?;
                    let Some(last) = batch.last().map(|e| e.id) else {
                        return Ok((0, 0));
                    };
                    let mut sites: Vec<Uuid> = batch.iter().map(|e| e.site_id).collect();
                    sites.sort_unstable();
                    sites.dedup();
                    let hooks = webhooks::active_for_sites(conn, &sites).await?;
                    let mut queue = Vec::new();
                    for e in &batch {
                        let private = e.kind == events::MESSAGE_CREATED
                            && e.payload["private"].as_bool().unwrap_or(false);
                        let mut body = None;
                        for h in hooks.iter().filter(|h| {
                            h.site_id == e.site_id
                                && h.events.contains(&e.kind)
                                && (!private || h.include_private)
                        }) {
                            let body = match &body {
                                Some(b) => b,
                                None => body
                                    .insert(serde_json::to_string(e).map_err(AppError::internal)?),
                            };
                            queue.push(NewDelivery {
                                webhook_id: h.id,
                                event_id: e.id,
                                event_type: e.kind.clone(),
                                body: body.clone(),
                            });
                        }
                    }
                    let queued = webhooks::enqueue(conn, &queue).await?;
                    events::set_cursor(conn, CURSOR, last).await?;
                    Ok::<_, AppError>((batch.len(), queued))
                })
                .await
            })
            .await?;
        if queued > 0 {
            self.deliveries.notify_one();
        }
        Ok(relayed)
    }

    async fn deliver_forever(self: Arc<Self>) {
        loop {
            let woken = self.deliveries.notified();
            match self.deliver_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => log::warn!("worker: deliveries: {}", e.message),
            }
            let _ = tokio::time::timeout(self.poll(), woken).await;
        }
    }

    /// Sends one batch of due deliveries; answers how many were attempted.
    async fn deliver_once(&self) -> AppResult<usize> {
        // The request is bounded by the timeout; the hold outlasts it, and a worker that died
        // mid-send frees its claims when the hold ends.
        let hold = self.ctx.settings.webhook_timeout_secs.max(1) as f64 + 5.0;
        let claimed = self
            .ctx
            .db
            .run(async |conn| webhooks::claim_due(conn, DELIVERY_BATCH, hold).await)
            .await?;
        let n = claimed.len();
        let sends = claimed.into_iter().map(|d| self.deliver(d));
        futures_util::future::join_all(sends).await;
        Ok(n)
    }

    async fn deliver(&self, d: Claimed) {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&d.secret, timestamp, &d.body);
        let sent = self
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .header("x-kefu-event", &d.event_type)
            .header("x-kefu-delivery", d.id.to_string())
            .header("x-kefu-event-id", d.event_id.to_string())
            .header("x-kefu-timestamp", timestamp.to_string())
            .header("x-kefu-signature", format!("sha256={signature}"))
            .body(d.body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(res) if res.status().is_success() => (Some(res.status().as_u16() as i32), None),
            Ok(res) => (
                Some(res.status().as_u16() as i32),
                Some(format!("receiver answered {}", res.status())),
            ),
            Err(e) if e.is_timeout() => (None, Some("timed out".to_string())),
            Err(e) => (None, Some(format!("cannot deliver: {e}"))),
        };
        let id = d.id;
        let result = match error {
            None => {
                let status = status.unwrap_or(200);
                self.ctx
                    .db
                    .run(async |conn| webhooks::delivered(conn, id, status).await)
                    .await
            }
            Some(error) => {
                let retry = retry_delay(
                    d.attempts,
                    self.ctx.settings.webhook_max_attempts,
                    self.ctx.settings.webhook_retry_secs,
                );
                log::info!(
                    "webhook delivery {id} (attempt {}) failed: {error}{}",
                    d.attempts,
                    if retry.is_some() {
                        "; will retry"
                    } else {
                        "; giving up"
                    }
                );
                self.ctx
                    .db
                    .run(async |conn| {
                        webhooks::attempt_failed(conn, id, status, &error, retry).await
                    })
                    .await
            }
        };
        if let Err(e) = result {
            // The hold expires and the delivery is sent again: at least once.
            log::warn!("worker: cannot record delivery {id}: {}", e.message);
        }
    }

    async fn housekeeping_forever(self: Arc<Self>) {
        let mut last_prune: Option<Instant> = None;
        loop {
            if let Err(e) = self.auto_resolve_once().await {
                log::warn!("worker: auto-resolve: {}", e.message);
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let keep = (self.ctx.settings.event_retention_hours.max(1) * 3600) as i64;
                match self
                    .ctx
                    .db
                    .run(async |conn| events::prune(conn, keep).await)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => log::info!("worker: pruned {n} old events"),
                    Err(e) => log::warn!("worker: prune: {}", e.message),
                }
            }
            tokio::time::sleep(AUTO_RESOLVE_EVERY).await;
        }
    }

    /// Resolves conversations idle past their limit; answers how many.
    pub async fn auto_resolve_once(&self) -> AppResult<usize> {
        let global = self.ctx.settings.auto_resolve_secs as i64;
        let due = self
            .ctx
            .db
            .run(async |conn| crate::db::auto_resolve::idle_conversations(conn, global, 100).await)
            .await?;
        let mut resolved = 0;
        for (id, cutoff) in due {
            let conv = self
                .ctx
                .db
                .run(async |conn| crate::db::conversations::resolve_if_idle(conn, id, cutoff).await)
                .await?;
            // Someone wrote meanwhile (or another worker resolved it): leave it.
            let Some(conv) = conv else { continue };
            resolved += 1;
            self.ctx.bus.publish(Event::ConversationUpdated {
                conversation: conv.clone(),
            });
            if let Some(assign) = &self.ctx.assign {
                assign.notify_one();
            }
            let note = NewMessage {
                conversation_id: id,
                sender_type: SenderType::System,
                sender_id: None,
                private: false,
                body: self.ctx.settings.auto_resolve_message.clone(),
                client_msg_id: Some(format!(
                    "auto-resolve-{}",
                    conv.resolved_at.map(|t| t.timestamp_micros()).unwrap_or(0)
                )),
                origin: None,
                attachments: Vec::new(),
            };
            if let Err(e) = self.ctx.writer.write(note).await {
                log::warn!("worker: auto-resolve message for {id}: {}", e.message);
            }
        }
        if resolved > 0 {
            log::info!("worker: auto-resolved {resolved} idle conversations");
        }
        Ok(resolved)
    }
}

async fn lock_cursor(conn: &mut diesel_async::AsyncPgConnection) -> AppResult<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        after_id: i64,
    }
    use diesel::OptionalExtension;
    let row: Option<Row> = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT after_id FROM event_cursors WHERE name = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind::<diesel::sql_types::Text, _>(CURSOR),
        conn,
    )
    .await
    .optional()?;
    Ok(row.map(|r| r.after_id))
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`: what `X-Kefu-Signature` carries after
/// `sha256=`. Receivers recompute it and refuse old timestamps (replays).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Seconds until the next attempt after `attempts` failed ones, `None` to give up.
pub fn retry_delay(attempts: i32, max_attempts: u32, base_secs: f64) -> Option<f64> {
    if attempts < 1 || attempts as u32 >= max_attempts.max(1) {
        return None;
    }
    let exp = (attempts - 1).min(30);
    Some((base_secs.max(0.0) * f64::powi(2.0, exp)).min(MAX_RETRY_SECS))
}

/// A webhook body as receivers get it (the event, as `GET /api/events` shows it).
#[derive(Debug, Deserialize)]
pub struct WebhookBody {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_gives_up() {
        assert_eq!(retry_delay(1, 5, 10.0), Some(10.0));
        assert_eq!(retry_delay(2, 5, 10.0), Some(20.0));
        assert_eq!(retry_delay(4, 5, 10.0), Some(80.0));
        assert_eq!(retry_delay(5, 5, 10.0), None);
        assert_eq!(retry_delay(20, 100, 10.0), Some(MAX_RETRY_SECS));
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign("secret", 1_700_000_000, "{}"),
            "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(sign("secret", 1, "{}"), sign("secret", 2, "{}"));
        assert_ne!(sign("a", 1, "{}"), sign("b", 1, "{}"));
        assert_eq!(sign("k", 1, "x").len(), 64);
    }
}
