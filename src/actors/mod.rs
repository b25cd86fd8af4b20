//! The actors of ARCHITECTURE.md: one [`session::WsSession`] per WebSocket, one
//! [`room::Room`] per active conversation, the [`dispatcher::Dispatcher`] that starts and
//! reaps rooms, the [`cache::Cache`] in front of Redis and PostgreSQL, and the
//! [`metrics::MetricsActor`] that owns the Prometheus registry.

pub mod cache;
pub mod dispatcher;
pub mod metrics;
pub mod room;
pub mod session;
