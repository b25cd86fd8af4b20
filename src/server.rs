//! Start-up and shutdown of one node: builds the actors and handles, binds the HTTP
//! server, and stops gracefully (stop accepting, close sockets with 1001 so clients
//! reconnect elsewhere, let in-flight requests and queued writes finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpServer};
use actix_web_actors::ws::CloseCode;
use tokio::sync::Notify;

use crate::actors::cache::{Cache, CacheActor};
use crate::actors::dispatcher::Dispatcher;
use crate::actors::metrics::MetricsActor;
use crate::bus::Bus;
use crate::config::Settings;
use crate::db::writer::MessageWriter;
use crate::db::{self, Db};
use crate::metrics::Metrics;
use crate::state::AppState;

/// A running node.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub handle: ServerHandle,
    server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    /// The in-process worker (`KEFU_WORKER`), when it runs.
    pub worker: Option<crate::worker::WorkerHandle>,
}

pub(crate) fn redis_pool(url: &str) -> Result<deadpool_redis::Pool, String> {
    let cfg = deadpool_redis::Config::from_url(url);
    let timeouts = deadpool_redis::Timeouts {
        wait: Some(Duration::from_secs(1)),
        create: Some(Duration::from_secs(1)),
        recycle: Some(Duration::from_secs(1)),
    };
    cfg.builder()
        .map_err(|e| format!("REDIS_URL: {e}"))?
        .max_size(32)
        .timeouts(timeouts)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("REDIS_URL: {e}"))
}

/// Creates the first admin from `KEFU_ADMIN_EMAIL`/`KEFU_ADMIN_PASSWORD` on a database
/// without agents.
async fn bootstrap_admin(state: &AppState) -> Result<(), String> {
    let (Some(email), Some(password)) = (
        state.settings.admin_email.clone(),
        state.settings.admin_password.clone(),
    ) else {
        return Ok(());
    };
    let n = state
        .db
        .run(async |conn| crate::db::agents::count(conn).await)
        .await
        .map_err(|e| e.message)?;
    if n > 0 {
        return Ok(());
    }
    crate::password::check_strength(&password)
        .map_err(|e| format!("KEFU_ADMIN_PASSWORD: {}", e.message))?;
    let phc = web::block(move || crate::password::hash(&password))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.message)?;
    let name = email.split('@').next().unwrap_or("admin").to_string();
    match state
        .db
        .run(async |conn| {
            crate::db::agents::create(conn, &email, &name, crate::protocol::Role::Admin, &phc, 5)
                .await
        })
        .await
    {
        Ok(a) => log::info!("created the first admin {}", a.email),
        // Another node raced us to it.
        Err(e) if e.code == crate::error::ErrorCode::Conflict => {}
        Err(e) => return Err(e.message),
    }
    Ok(())
}

/// Builds a node and starts serving. Call inside an actix `System`.
pub async fn start(settings: Settings) -> Result<RunningServer, String> {
    let node_id = settings.node_name();
    let applied = db::migrate(&settings.database_url)?;
    for m in &applied {
        log::info!("applied migration {m}");
    }
    let db = Db::new(
        &settings.database_url,
        settings.db_pool_size,
        settings.db_timeout(),
    )
    .map_err(|e| e.message)?;
    let storage = crate::storage::from_settings(&settings)?;
    log::info!("attachments are stored in the {}", storage.describe());
    let metrics = Metrics::new();
    let db = db.with_slow_log(Duration::from_millis(settings.slow_ms), metrics.clone());
    let redis = match &settings.redis_url {
        Some(url) => Some(crate::redis_client::Redis::new(
            redis_pool(url)?,
            metrics.clone(),
            Duration::from_millis(settings.slow_ms),
        )),
        None => {
            log::warn!(
                "REDIS_URL is not set: running as a single node with the in-memory cache only"
            );
            None
        }
    };
    let cache = Cache::new(
        db.clone(),
        redis.clone(),
        &settings.redis_prefix,
        settings.cache_ttls(),
        metrics.clone(),
    );
    let cache = if settings.cache {
        cache
    } else {
        log::warn!("KEFU_CACHE=false: every read goes to PostgreSQL");
        cache.without_caching()
    };
    let mut bus = Bus::new(&node_id, metrics.clone()).with_cache(cache.clone());
    if let (Some(pool), Some(url)) = (&redis, &settings.redis_url) {
        bus = bus.with_redis(pool.clone(), url, &settings.redis_prefix);
    }
    let assign = Arc::new(Notify::new());
    let writer = MessageWriter::start(
        db.clone(),
        bus.clone(),
        assign.clone(),
        metrics.clone(),
        settings.writer_shards,
        settings.writer_batch,
    );
    let arbiters: Vec<ArbiterHandle> = (0..2).map(|_| Arbiter::new().handle()).collect();
    let dispatcher = Dispatcher::new(
        bus.rooms.clone(),
        arbiters,
        writer.clone(),
        Duration::from_secs(settings.room_idle_secs.max(1)),
        metrics.clone(),
    )
    .start();
    CacheActor::new(cache.clone(), settings.redis_url.clone()).start();
    let metrics_actor = MetricsActor::new(metrics.clone(), db.clone(), redis.clone()).start();
    let state = AppState::new(
        settings.clone(),
        node_id.clone(),
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
    );
    bootstrap_admin(&state).await?;
    state.spawn_assigner();
    crate::presence::spawn_upkeep(&state);
    db::partitions::spawn_upkeep(state.db.clone());
    let worker = if settings.worker {
        Some(
            crate::worker::start(crate::worker::WorkerContext {
                db: state.db.clone(),
                writer: state.writer.clone(),
                bus: state.bus.clone(),
                settings: settings.clone(),
                assign: Some(state.assign.clone()),
            })
            .map_err(|e| e.message)?,
        )
    } else {
        log::info!("KEFU_WORKER=false: webhooks and auto-resolve are left to `kefu worker`");
        None
    };

    let app_state = state.clone();
    let workers = settings.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let track_requests = settings.http_metrics;
    // The kernel gives up on a peer that acknowledges nothing (or keeps a zero window) for
    // the client timeout: the backstop for a client that stops reading while its socket
    // buffers are full (its session actor is not polled then, so it cannot close itself).
    let tcp_user_timeout = settings.client_timeout();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(app_state.clone()))
            .wrap(middleware::Condition::new(
                track_requests,
                middleware::from_fn(crate::http::track),
            ))
            .configure(crate::http::configure)
    })
    .workers(workers.max(1))
    .backlog(4096)
    .max_connections(settings.max_connections.max(1024))
    .disable_signals()
    .shutdown_timeout(settings.shutdown_secs)
    .on_connect(move |conn, _ext| {
        if let Some(sock) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            // Small frames must not wait for Nagle (ARCHITECTURE.md: ~27 ms → ~3 ms p99).
            let _ = sock.set_nodelay(true);
            let _ = socket2::SockRef::from(sock).set_tcp_user_timeout(Some(tcp_user_timeout));
        }
    })
    .bind(settings.bind)
    .map_err(|e| format!("cannot listen on {} (KEFU_BIND): {e}", settings.bind))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| "no listening address".to_string())?;
    let server = server.run();
    let handle = server.handle();
    let server = actix_web::rt::spawn(server);
    log::info!(
        "kefu node {node_id} listening on http://{addr} (redis: {})",
        if state.redis.is_some() { "on" } else { "off" }
    );
    Ok(RunningServer {
        addr,
        state,
        handle,
        server,
        worker,
    })
}

impl RunningServer {
    /// Graceful stop: no new connections, WebSockets closed with 1001 (clients reconnect
    /// elsewhere), in-flight requests finished, queued messages committed.
    pub async fn stop(self) {
        // Whatever the worker was doing is safe to cut short (it resumes from PostgreSQL).
        if let Some(w) = &self.worker {
            w.abort();
        }
        self.handle.pause().await;
        let sessions = self.state.sessions.all();
        log::info!("stopping: closing {} WebSockets", sessions.len());
        for s in &sessions {
            s.close(CloseCode::Away, "server shutting down");
        }
        // Let the close frames go out before the workers stop.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.state.sessions.is_empty() && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        // Commit what the closed sockets queued while the HTTP workers still run: pooled
        // PostgreSQL connections opened on a worker are driven by that worker's runtime
        // and die with it, so a commit left for later would fail with "connection closed".
        let within = Duration::from_secs(self.state.settings.shutdown_secs.max(1));
        if !self.state.writer.flush(within).await {
            log::warn!("stopping: the message writer did not drain in time");
        }
        self.handle.stop(true).await;
        let _ = self.server.await;
        // Whatever in-flight HTTP requests queued meanwhile.
        self.state.writer.flush(within).await;
        log::info!("stopped");
    }

    /// Abrupt stop (tests of failure paths): no goodbyes.
    pub async fn kill(self) {
        if let Some(w) = &self.worker {
            w.abort();
        }
        self.handle.stop(false).await;
        let _ = self.server.await;
    }
}
