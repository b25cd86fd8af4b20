//! # kefu (客服) — a realtime customer-service chat server
//!
//! ## A tour
//!
//! - A request enters through [`server`], which builds one node: the HTTP routes in
//!   [`http`] and the actors in [`actors`].
//! - Visitors and agents hold a WebSocket each: an [`actors::session::WsSession`] parses
//!   frames ([`protocol`]), enforces the limits of [`domain::limits`], and sends what a user
//!   writes to the conversation's [`actors::room::Room`].
//! - The room hands the message to the [`db::writer::MessageWriter`], which commits batches
//!   in PostgreSQL with gap-free per-conversation `seq` numbers and then publishes each
//!   message on the [`bus`]. The bus delivers to this node's rooms and agent sessions and,
//!   through Redis, to every other node's. Nobody hears of a message before it is committed.
//! - The [`actors::dispatcher::Dispatcher`] starts rooms on demand and reaps idle ones; once a
//!   session has its room it never asks the dispatcher again.
//! - Reads that every page load makes (site configuration, agent tokens) go through the
//!   two-level [`actors::cache::Cache`]; counters live in [`metrics`] and are rendered by the
//!   [`actors::metrics::MetricsActor`].
//! - [`presence`] keeps the visitors online now (on every node, shared through Redis) for
//!   the agents' "online now" list, and hands a conversation an agent opened by greeting a
//!   visitor to the visitor's open sessions.
//! - Conversations wait in a queue in PostgreSQL; [`state::AppState::assign_once`] hands them to
//!   the least-loaded available agent ([`domain::assignment`]), safely across nodes; a site
//!   outside its business hours ([`domain::business_hours`]) keeps its queue waiting.
//! - A connecting widget becomes a visitor in [`http::identity::resolve_visitor`]: by its
//!   token, or — on a site with an identity secret — by its verified `user_id`
//!   ([`domain::identity`]), one visitor per user on every device.
//! - Changes that side effects care about are also written to the durable event stream
//!   ([`db::events`]) in the same transaction; the [`worker`] (inside `kefu serve` or as
//!   `kefu worker`) turns it into webhook deliveries, auto-resolves idle conversations, and
//!   out-of-process consumers read it from `GET /api/events`.
//! - Workflow features (issue 9): attachments ([`http::attachments`], bytes in a
//!   [`storage::AttachmentStore`]), canned responses, labels, visitor attributes and
//!   full-text search, each a `http/` module over a `db/` module.
//! - Shutdown ([`server::RunningServer::stop`]): stop accepting, close sockets with 1001,
//!   finish in-flight requests, commit queued messages.

pub mod actors;
pub mod bus;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod password;
pub mod presence;
pub mod protocol;
pub mod redis_client;
pub mod server;
pub mod state;
pub mod storage;
pub mod worker;

pub use config::Settings;
pub use server::{start, RunningServer};
