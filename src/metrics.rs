//! Hot-path metric handles. Each is a prometheus atomic: incrementing one never waits on
//! anything. The [`MetricsActor`](crate::actors::metrics::MetricsActor) owns the registry
//! these are registered in, computes the derived gauges and renders `/metrics`.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub ws_connections: IntGaugeVec,
    pub ws_frames_in: IntCounterVec,
    pub ws_frames_out: IntCounterVec,
    pub ws_errors: IntCounterVec,
    pub messages_processed: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub slow_client_disconnects: IntCounter,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    pub writer_queue: IntGauge,
    pub db_slow_calls: IntCounterVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_hit_ratio: prometheus::GaugeVec,
    pub queue_length: IntGauge,
    pub rooms_active: IntGauge,
    pub db_pool: IntGaugeVec,
    pub redis_pool: IntGaugeVec,
    pub bus_publish_errors: IntCounter,
    pub bus_reconnects: IntCounter,
    pub assignments: IntCounter,
    pub logins: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Metrics {
    /// Builds every metric in a fresh registry. The definitions are static, so the
    /// `expect`s here can only fire on a programming error, at start-up.
    #[allow(clippy::expect_used)]
    pub fn new() -> Metrics {
        let r = Registry::new();
        let latency = exponential_buckets(0.0005, 2.0, 16).expect("static buckets");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route pattern",
            )
            .buckets(latency.clone()),
            &["method", "route"],
        )
        .expect("static metric definition");
        r.register(Box::new(http_duration.clone()))
            .expect("metric registered once");
        let cache_hit_ratio = prometheus::GaugeVec::new(
            Opts::new(
                "cache_hit_ratio",
                "Cache hits / lookups since start, by level",
            ),
            &["level"],
        )
        .expect("static metric definition");
        r.register(Box::new(cache_hit_ratio.clone()))
            .expect("metric registered once");
        Metrics {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by method, route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration,
            ws_connections: gauge_vec(
                &r,
                "websocket_connections",
                "Open WebSocket connections by role",
                &["role"],
            ),
            ws_frames_in: counter_vec(
                &r,
                "websocket_frames_received_total",
                "WebSocket frames received by role",
                &["role"],
            ),
            ws_frames_out: counter_vec(
                &r,
                "websocket_frames_sent_total",
                "WebSocket frames sent by role",
                &["role"],
            ),
            ws_errors: counter_vec(
                &r,
                "websocket_errors_total",
                "Error frames sent, by code",
                &["code"],
            ),
            messages_processed: counter_vec(
                &r,
                "message_processed_total",
                "Messages committed, by sender type",
                &["sender_type"],
            ),
            rate_limited: counter_vec(
                &r,
                "rate_limited_total",
                "Requests refused by a rate limit, by kind",
                &["kind"],
            ),
            slow_client_disconnects: counter(
                &r,
                "slow_client_disconnects_total",
                "Clients disconnected because their outgoing queue overflowed",
            ),
            writer_batch_size: histogram(
                &r,
                "db_writer_batch_size",
                "Messages committed per writer transaction",
                exponential_buckets(1.0, 2.0, 11).expect("static buckets"),
            ),
            writer_commit_seconds: histogram(
                &r,
                "db_writer_commit_seconds",
                "Latency of one writer transaction",
                latency,
            ),
            writer_queue: gauge(&r, "db_writer_queue", "Messages waiting for the writer"),
            db_slow_calls: counter_vec(
                &r,
                "slow_calls_total",
                "Database and Redis calls slower than KEFU_SLOW_MS, by kind (the log names the call)",
                &["kind"],
            ),
            cache_hits: counter_vec(&r, "cache_hits_total", "Cache hits by level", &["level"]),
            cache_misses: counter_vec(
                &r,
                "cache_misses_total",
                "Cache misses by level",
                &["level"],
            ),
            cache_hit_ratio,
            queue_length: gauge(
                &r,
                "conversation_queue_length",
                "Conversations waiting for an agent",
            ),
            rooms_active: gauge(&r, "rooms_active", "Conversation rooms alive on this node"),
            db_pool: gauge_vec(
                &r,
                "db_pool_connections",
                "PostgreSQL pool connections by state",
                &["state"],
            ),
            redis_pool: gauge_vec(
                &r,
                "redis_pool_connections",
                "Redis pool connections by state",
                &["state"],
            ),
            bus_publish_errors: counter(
                &r,
                "bus_publish_errors_total",
                "Events that could not be published to other nodes",
            ),
            bus_reconnects: counter(
                &r,
                "bus_reconnects_total",
                "Times the Redis subscription was re-established",
            ),
            assignments: counter(
                &r,
                "assignments_total",
                "Conversations assigned automatically",
            ),
            logins: counter_vec(
                &r,
                "logins_total",
                "Login attempts by outcome",
                &["outcome"],
            ),
            registry: r,
        }
        .with_known_series()
    }

    /// Creates every labelled series that is known up front at zero, so dashboards and
    /// alerts see them before the first event.
    fn with_known_series(self) -> Metrics {
        for role in ["visitor", "agent"] {
            self.ws_connections.with_label_values(&[role]);
            self.ws_frames_in.with_label_values(&[role]);
            self.ws_frames_out.with_label_values(&[role]);
        }
        for sender in ["visitor", "agent", "bot", "system"] {
            self.messages_processed.with_label_values(&[sender]);
        }
        for code in [
            "bad_request",
            "unauthorized",
            "forbidden",
            "not_found",
            "conflict",
            "too_large",
            "rate_limited",
            "unavailable",
            "internal",
        ] {
            self.ws_errors.with_label_values(&[code]);
        }
        for kind in ["visitor_send", "login"] {
            self.rate_limited.with_label_values(&[kind]);
        }
        for kind in ["db", "redis"] {
            self.db_slow_calls.with_label_values(&[kind]);
        }
        for level in ["l1", "l2"] {
            self.cache_hits.with_label_values(&[level]);
            self.cache_misses.with_label_values(&[level]);
            self.cache_hit_ratio.with_label_values(&[level]);
        }
        for outcome in ["ok", "failed", "throttled"] {
            self.logins.with_label_values(&[outcome]);
        }
        self
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
