//! Settings, read from the environment (and a `.env` file, loaded by `main`).
//!
//! Every variable the server reads is declared here, once, with its default; `kefu --help`
//! prints them all. Limits from SPEC §5 live here so operators can tune them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// Everything a node needs to run. Built by clap from flags or environment variables.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP/WebSocket server listens on.
    #[arg(long, env = "KEFU_BIND", default_value = "0.0.0.0:6006")]
    pub bind: SocketAddr,

    /// PostgreSQL connection URL (required; the source of truth).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/kefu"
    )]
    pub database_url: String,

    /// Redis URL: shared cache, cross-node fan-out and presence. Unset = single node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix for every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env = "KEFU_REDIS_PREFIX", default_value = "kefu")]
    pub redis_prefix: String,

    /// Name of this node in logs and on the bus (default: a random id).
    #[arg(long, env = "KEFU_NODE_ID")]
    pub node_id: Option<String>,

    /// HTTP worker threads (default: number of CPUs).
    #[arg(long, env = "KEFU_WORKERS")]
    pub workers: Option<usize>,

    /// Maximum PostgreSQL connections held by this node.
    #[arg(long, env = "KEFU_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Seconds to wait for a PostgreSQL connection or query before answering `unavailable`.
    #[arg(long, env = "KEFU_DB_TIMEOUT_SECS", default_value_t = 5)]
    pub db_timeout_secs: u64,

    /// First admin, created on an empty database.
    #[arg(long, env = "KEFU_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the first admin (only read when the database has no agent).
    #[arg(long, env = "KEFU_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Visitor messages per second (token bucket refill rate).
    #[arg(long, env = "KEFU_VISITOR_RATE", default_value_t = 5.0)]
    pub visitor_rate: f64,

    /// Visitor message burst (token bucket size).
    #[arg(long, env = "KEFU_VISITOR_BURST", default_value_t = 20.0)]
    pub visitor_burst: f64,

    /// Failed logins per email within the window before logins answer 429.
    #[arg(long, env = "KEFU_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: i64,

    /// Login failure window in seconds.
    #[arg(long, env = "KEFU_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: u64,

    /// Agent tokens expire after this many hours without use.
    #[arg(long, env = "KEFU_TOKEN_IDLE_HOURS", default_value_t = 12)]
    pub token_idle_hours: u64,

    /// A visitor may rate (or change the rating of) a resolved conversation for this many
    /// hours after it was resolved (CSAT).
    #[arg(long, env = "KEFU_CSAT_WINDOW_HOURS", default_value_t = 168)]
    pub csat_window_hours: u64,

    /// WebSocket heartbeat ping interval in seconds.
    #[arg(long, env = "KEFU_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,

    /// A WebSocket silent for this many seconds is dropped.
    #[arg(long, env = "KEFU_CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub client_timeout_secs: u64,

    /// Frames queued for one client before it counts as too slow and is disconnected.
    #[arg(long, env = "KEFU_OUTGOING_QUEUE", default_value_t = 1000)]
    pub outgoing_queue: usize,

    /// Largest accepted WebSocket frame in bytes.
    #[arg(long, env = "KEFU_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Open WebSockets per node before new ones are refused.
    #[arg(long, env = "KEFU_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Open WebSockets per client IP address before new ones are refused.
    #[arg(long, env = "KEFU_MAX_CONNECTIONS_PER_IP", default_value_t = 10_000)]
    pub max_connections_per_ip: usize,

    /// Largest number of messages one writer transaction commits.
    #[arg(long, env = "KEFU_WRITER_BATCH", default_value_t = 512)]
    pub writer_batch: usize,

    /// Parallel message writers (conversations are sharded over them).
    #[arg(long, env = "KEFU_WRITER_SHARDS", default_value_t = 2)]
    pub writer_shards: usize,

    /// A room with no member stops after this many seconds.
    #[arg(long, env = "KEFU_ROOM_IDLE_SECS", default_value_t = 60)]
    pub room_idle_secs: u64,

    /// A visitor whose last connection closed stays in the agents' "online now" list this
    /// many seconds (going from page to page reconnects within it).
    #[arg(long, env = "KEFU_PRESENCE_GRACE_SECS", default_value_t = 8)]
    pub presence_grace_secs: u64,

    /// Database and Redis calls slower than this many milliseconds are logged and counted.
    #[arg(long, env = "KEFU_SLOW_MS", default_value_t = 250)]
    pub slow_ms: u64,

    /// Per-request metrics and request ids (on by default; off only to measure their cost).
    #[arg(long, env = "KEFU_HTTP_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub http_metrics: bool,

    /// The two-level cache (on by default; off only to measure what it buys).
    #[arg(long, env = "KEFU_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache: bool,

    /// Cache TTL of site configurations, in seconds.
    #[arg(long, env = "KEFU_CACHE_SITE_SECS", default_value_t = 300)]
    pub cache_site_secs: u64,

    /// Cache TTL of agent token lookups, in seconds (revocations invalidate at once).
    #[arg(long, env = "KEFU_CACHE_TOKEN_SECS", default_value_t = 30)]
    pub cache_token_secs: u64,

    /// Cache TTL of conversation metadata, in seconds.
    #[arg(long, env = "KEFU_CACHE_CONVERSATION_SECS", default_value_t = 600)]
    pub cache_conversation_secs: u64,

    /// Cache TTL of visitor profiles, in seconds.
    #[arg(long, env = "KEFU_CACHE_VISITOR_SECS", default_value_t = 300)]
    pub cache_visitor_secs: u64,

    /// Cache TTL of a conversation's newest history page, in seconds.
    #[arg(long, env = "KEFU_CACHE_HISTORY_SECS", default_value_t = 60)]
    pub cache_history_secs: u64,

    /// Run the background worker (webhooks, auto-resolve, event retention) inside `kefu
    /// serve`. Turn off when `kefu worker` processes do that work instead.
    #[arg(long, env = "KEFU_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub worker: bool,

    /// Events older than this many hours are deleted once every consumer cursor passed them.
    #[arg(long, env = "KEFU_EVENT_RETENTION_HOURS", default_value_t = 168)]
    pub event_retention_hours: u64,

    /// Unresolved conversations idle this many seconds are resolved with a system message
    /// (0 = never; a site's own setting, PUT /api/sites/{id}/auto-resolve, takes precedence).
    #[arg(long, env = "KEFU_AUTO_RESOLVE_SECS", default_value_t = 0)]
    pub auto_resolve_secs: u64,

    /// The system message posted when a conversation is resolved for inactivity.
    #[arg(
        long,
        env = "KEFU_AUTO_RESOLVE_MESSAGE",
        default_value = "This conversation was resolved automatically after a period of inactivity. Write again any time."
    )]
    pub auto_resolve_message: String,

    /// Seconds a webhook receiver has to answer one delivery.
    #[arg(long, env = "KEFU_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Attempts per webhook delivery before it is marked failed.
    #[arg(long, env = "KEFU_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// First retry delay in seconds; it doubles with every failed attempt (capped at 1 h).
    #[arg(long, env = "KEFU_WEBHOOK_RETRY_SECS", default_value_t = 10.0)]
    pub webhook_retry_secs: f64,

    /// How often (milliseconds) an idle worker looks for work it was not woken for.
    #[arg(long, env = "KEFU_WORKER_POLL_MS", default_value_t = 1000)]
    pub worker_poll_ms: u64,

    /// Seconds given to in-flight work on SIGTERM/SIGINT before the process exits.
    #[arg(long, env = "KEFU_SHUTDOWN_SECS", default_value_t = 10)]
    pub shutdown_secs: u64,

    /// Largest uploaded file (attachment) in bytes; larger uploads answer 413 `too_large`.
    #[arg(long, env = "KEFU_ATTACHMENT_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub attachment_max_bytes: u64,

    /// Where attachments are stored: `local` (a directory, KEFU_ATTACHMENT_DIR) or `s3`
    /// (an S3-compatible bucket, KEFU_S3_*). Every node must reach the same store.
    #[arg(long, env = "KEFU_ATTACHMENT_STORE", default_value = "local")]
    pub attachment_store: String,

    /// Directory of the local attachment store (created when missing).
    #[arg(long, env = "KEFU_ATTACHMENT_DIR", default_value = "data/attachments")]
    pub attachment_dir: std::path::PathBuf,

    /// S3 bucket of the `s3` attachment store.
    #[arg(long, env = "KEFU_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region.
    #[arg(long, env = "KEFU_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 endpoint URL for S3-compatible stores (MinIO, Ceph, R2…); unset = AWS.
    #[arg(long, env = "KEFU_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 access key id (unset: the usual AWS_* variables and instance credentials).
    #[arg(long, env = "KEFU_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key.
    #[arg(long, env = "KEFU_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Key prefix of attachments inside the bucket.
    #[arg(long, env = "KEFU_S3_PREFIX", default_value = "attachments")]
    pub s3_prefix: String,
}

impl Settings {
    /// Settings from the environment alone (defaults where a variable is unset).
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        use clap::Parser;
        Only::try_parse_from(["kefu"]).map(|o| o.settings)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.client_timeout_secs.max(1))
    }

    pub fn db_timeout(&self) -> Duration {
        Duration::from_secs(self.db_timeout_secs.max(1))
    }

    pub fn token_idle(&self) -> chrono::Duration {
        chrono::Duration::hours(self.token_idle_hours.max(1) as i64)
    }

    pub fn csat_window(&self) -> chrono::Duration {
        chrono::Duration::hours(self.csat_window_hours as i64)
    }

    pub fn cache_ttls(&self) -> crate::actors::cache::CacheTtls {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        crate::actors::cache::CacheTtls {
            site: secs(self.cache_site_secs),
            token: secs(self.cache_token_secs),
            conversation: secs(self.cache_conversation_secs),
            visitor: secs(self.cache_visitor_secs),
            history: secs(self.cache_history_secs),
            ..Default::default()
        }
    }

    pub fn node_name(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
    }
}
