//! Redis access with a circuit breaker.
//!
//! Redis is optional at run time: when it is down, the cache falls back to L1 and
//! PostgreSQL and cross-node fan-out pauses (clients close gaps with `resume`). Without a
//! breaker every cache miss and every published event would wait for a connect timeout;
//! with it, one failure makes the node skip Redis for a short while, then try again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How long Redis is skipped after a failure before the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Redis {
    pub pool: deadpool_redis::Pool,
    state: Arc<Breaker>,
    metrics: Metrics,
    slow: Duration,
}

struct Breaker {
    down: AtomicBool,
    /// Milliseconds since `epoch` after which another attempt is allowed.
    retry_at_ms: AtomicU64,
    epoch: Instant,
}

impl Redis {
    pub fn new(pool: deadpool_redis::Pool, metrics: Metrics, slow: Duration) -> Redis {
        Redis {
            pool,
            state: Arc::new(Breaker {
                down: AtomicBool::new(false),
                retry_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            metrics,
            slow,
        }
    }

    fn now_ms(&self) -> u64 {
        self.state.epoch.elapsed().as_millis() as u64
    }

    /// False while the breaker is open (Redis failed recently).
    pub fn usable(&self) -> bool {
        !self.state.down.load(Ordering::Acquire)
            || self.now_ms() >= self.state.retry_at_ms.load(Ordering::Acquire)
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::Acquire)
    }

    fn failed(&self, what: &str, err: &str) {
        if !self.state.down.swap(true, Ordering::AcqRel) {
            log::warn!("redis: {what} failed ({err}); using L1 and PostgreSQL until it returns");
        }
        self.state.retry_at_ms.store(
            self.now_ms() + RETRY_AFTER.as_millis() as u64,
            Ordering::Release,
        );
    }

    fn succeeded(&self) {
        if self.state.down.swap(false, Ordering::AcqRel) {
            log::info!("redis: back");
        }
    }

    /// Runs one command; `None` when Redis is down or the command fails.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        cmd: &redis::Cmd,
    ) -> Option<T> {
        if !self.usable() {
            return None;
        }
        let started = Instant::now();
        let res: Result<T, String> = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        self.finish(name, started, res)
    }

    /// Runs a pipeline in one round trip; `None` when Redis is down or a command fails.
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        if !self.usable() {
            return None;
        }
        let started = Instant::now();
        let res: Result<T, String> = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            pipe.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        self.finish(name, started, res)
    }

    fn finish<T>(&self, name: &'static str, started: Instant, res: Result<T, String>) -> Option<T> {
        let took = started.elapsed();
        if took >= self.slow {
            log::warn!("slow redis call {name}: {} ms", took.as_millis());
            self.metrics
                .db_slow_calls
                .with_label_values(&["redis"])
                .inc();
        }
        match res {
            Ok(v) => {
                self.succeeded();
                Some(v)
            }
            Err(e) => {
                self.failed(name, &e);
                None
            }
        }
    }

    /// PING with a short timeout, for `/readyz`.
    pub async fn ping(&self) -> bool {
        let res = tokio::time::timeout(Duration::from_secs(2), async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match res {
            Ok(Ok(_)) => {
                self.succeeded();
                true
            }
            Ok(Err(e)) => {
                self.failed("ping", &e);
                false
            }
            Err(_) => {
                self.failed("ping", "timed out");
                false
            }
        }
    }
}
