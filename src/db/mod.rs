//! PostgreSQL: the pool, embedded migrations, and one module of queries per table.
//!
//! Every call goes through [`Db::run`], which bounds the time spent waiting for a
//! connection and for the query, so a frozen database answers `unavailable` quickly
//! instead of piling up requests.

pub mod agents;
pub mod attachments;
pub mod auto_resolve;
pub mod canned;
pub mod conversations;
pub mod csat;
pub mod events;
pub mod export;
pub mod labels;
pub mod messages;
pub mod partitions;
pub mod reports;
pub mod schema;
pub mod search;
pub mod sites;
pub mod visitors;
pub mod webhooks;
pub mod writer;

use std::future::Future;
use std::time::{Duration, Instant};

use diesel::Connection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::{AppError, AppResult};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn = Object<AsyncPgConnection>;

/// The node's database handle: a bounded pool plus the time limit for each call.
#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    pub timeout: Duration,
    slow: Option<(Duration, crate::metrics::Metrics)>,
}

impl Db {
    pub fn new(database_url: &str, max_size: usize, timeout: Duration) -> AppResult<Db> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| AppError::internal(format!("database pool: {e}")))?;
        Ok(Db {
            pool,
            timeout,
            slow: None,
        })
    }

    /// Logs and counts (`slow_calls_total{name}`) every call slower than `threshold`,
    /// named by the calling source line.
    pub fn with_slow_log(mut self, threshold: Duration, metrics: crate::metrics::Metrics) -> Db {
        self.slow = Some((threshold, metrics));
        self
    }

    /// Runs `f` with a pooled connection, bounded by the configured timeout. Slow calls
    /// are logged with the caller's source location.
    #[track_caller]
    pub fn run<'a, T, F>(&'a self, f: F) -> impl Future<Output = AppResult<T>> + 'a
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> AppResult<T> + 'a,
        T: 'a,
    {
        let caller = std::panic::Location::caller();
        async move {
            let started = Instant::now();
            let work = async {
                let mut conn = self.pool.get().await?;
                f(&mut conn).await
            };
            let out = tokio::time::timeout(self.timeout, work).await;
            if let Some((threshold, metrics)) = &self.slow {
                let took = started.elapsed();
                if took >= *threshold {
                    let name = format!("db:{}:{}", caller.file(), caller.line());
                    log::warn!("slow database call {name}: {} ms", took.as_millis());
                    metrics.db_slow_calls.with_label_values(&["db"]).inc();
                }
            }
            out?
        }
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> AppResult<()> {
        self.run(async |conn| {
            diesel::sql_query("SELECT 1").execute(conn).await?;
            Ok(())
        })
        .await
    }
}

/// Applies pending migrations. Blocking: runs on its own thread and runtime, and holds a
/// PostgreSQL advisory lock so nodes starting together migrate once.
pub fn migrate(database_url: &str) -> Result<Vec<String>, String> {
    let url = database_url.to_string();
    let worker = std::thread::spawn(move || -> Result<Vec<String>, String> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| format!("cannot connect to {}: {e}", redact(&url)))?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock(726104001)"),
            &mut conn,
        )
        .map_err(|e| format!("migration lock: {e}"))?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|done| done.iter().map(|v| v.to_string()).collect::<Vec<_>>())
            .map_err(|e| format!("migration failed: {e}"));
        if result.is_ok() {
            // The coming months' message partitions; without them inserts still work (the
            // default partition), so a failure here is only worth a warning.
            let ensure = diesel::sql_query("SELECT kefu_ensure_partitions($1)")
                .bind::<diesel::sql_types::Integer, _>(partitions::MONTHS_AHEAD);
            if let Err(e) = diesel::RunQueryDsl::execute(ensure, &mut conn) {
                log::warn!("cannot create the coming message partitions: {e}");
            }
        }
        let _ = diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_unlock(726104001)"),
            &mut conn,
        );
        result
    });
    worker
        .join()
        .map_err(|_| "migration thread panicked".to_string())?
}

/// A database URL with its password hidden, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
