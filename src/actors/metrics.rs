//! `MetricsActor`: owns the Prometheus registry, refreshes the derived gauges (queue
//! length, pool usage) on a timer and renders `/metrics` on request. Hot-path counters are
//! atomics in [`Metrics`]; nothing on the message path waits for this actor.

use std::time::Duration;

use actix::prelude::*;
use prometheus::{Encoder, TextEncoder};

use crate::db::Db;
use crate::metrics::Metrics;

pub struct MetricsActor {
    metrics: Metrics,
    db: Db,
    redis: Option<crate::redis_client::Redis>,
}

impl MetricsActor {
    pub fn new(
        metrics: Metrics,
        db: Db,
        redis: Option<crate::redis_client::Redis>,
    ) -> MetricsActor {
        MetricsActor { metrics, db, redis }
    }

    fn refresh_pools(&self) {
        let s = self.db.pool.status();
        let g = &self.metrics.db_pool;
        g.with_label_values(&["size"]).set(s.size as i64);
        g.with_label_values(&["available"]).set(s.available as i64);
        g.with_label_values(&["waiting"]).set(s.waiting as i64);
        g.with_label_values(&["max"]).set(s.max_size as i64);
        if let Some(r) = &self.redis {
            let s = r.pool.status();
            let g = &self.metrics.redis_pool;
            g.with_label_values(&["size"]).set(s.size as i64);
            g.with_label_values(&["available"]).set(s.available as i64);
            g.with_label_values(&["waiting"]).set(s.waiting as i64);
            g.with_label_values(&["max"]).set(s.max_size as i64);
        }
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh_pools();
        ctx.run_interval(Duration::from_secs(1), |a, _| a.refresh_pools());
        ctx.run_interval(Duration::from_secs(5), |a, ctx| {
            let db = a.db.clone();
            let gauge = a.metrics.queue_length.clone();
            ctx.spawn(
                async move {
                    if let Ok(n) = db
                        .run(async |conn| crate::db::conversations::queue_length(conn).await)
                        .await
                    {
                        gauge.set(n);
                    }
                }
                .into_actor(a),
            );
        });
    }
}

/// The current metrics in the Prometheus text format.
#[derive(Message)]
#[rtype(result = "String")]
pub struct Render;

impl Handler<Render> for MetricsActor {
    type Result = String;
    fn handle(&mut self, _: Render, _: &mut Self::Context) -> String {
        self.refresh_pools();
        let families = self.metrics.registry.gather();
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
