//! HTTP routes (SPEC §4, §6): one module per resource, plus the shared pieces — the
//! authenticated-agent extractor, request metrics middleware and JSON error handling.

pub mod agents;
pub mod assets;
pub mod attachments;
pub mod attributes;
pub mod auth;
pub mod canned;
pub mod conversations;
pub mod csat;
pub mod events;
pub mod export;
pub mod identity;
pub mod labels;
pub mod ops;
pub mod poll;
pub mod reports;
pub mod search;
pub mod sites;
pub mod visitor_attributes;
pub mod visitors;
pub mod webhooks;
pub mod widget;
pub mod ws;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};
use crate::protocol::{Agent, Role};
use crate::state::AppState;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BODY)
            .error_handler(|err, _| AppError::from(err).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| AppError::bad_request(format!("invalid query: {err}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| AppError::bad_request(format!("invalid path: {err}")).into()),
    )
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/ws/visitor", web::get().to(ws::visitor))
    .route("/ws/agent", web::get().to(ws::agent))
    .route("/api/config", web::get().to(widget::config))
    .route("/api/auth/login", web::post().to(auth::login))
    .route("/api/auth/logout", web::post().to(auth::logout))
    .route("/api/me", web::get().to(auth::me))
    .route("/api/me/status", web::put().to(auth::set_status))
    .route("/api/stats", web::get().to(conversations::stats))
    .route("/api/reports", web::get().to(reports::report))
    .route("/api/conversations", web::get().to(conversations::list))
    .route("/api/conversations/{id}", web::get().to(conversations::get))
    .route(
        "/api/conversations/{id}/messages",
        web::get().to(conversations::messages),
    )
    .route(
        "/api/conversations/{id}/messages",
        web::post().to(conversations::post_message),
    )
    .route(
        "/api/conversations/{id}/assign",
        web::post().to(conversations::assign),
    )
    .route(
        "/api/conversations/{id}/resolve",
        web::post().to(conversations::resolve),
    )
    .route(
        "/api/conversations/{id}/reopen",
        web::post().to(conversations::reopen),
    )
    .route(
        "/api/conversations/{id}/typing",
        web::post().to(conversations::typing),
    )
    .route(
        "/api/conversations/{id}/read",
        web::post().to(conversations::read),
    )
    .route("/api/visitors/online", web::get().to(visitors::online))
    .route("/api/visitors/{id}/greet", web::post().to(visitors::greet))
    .route(
        "/api/export/conversations",
        web::get().to(export::conversations),
    )
    .route("/api/export/messages", web::get().to(export::messages))
    .route("/api/events", web::get().to(events::read))
    .route(
        "/api/event-cursors/{name}",
        web::get().to(events::get_cursor),
    )
    .route(
        "/api/event-cursors/{name}",
        web::put().to(events::put_cursor),
    )
    .route(
        "/api/conversations/{id}/attachments",
        web::post().to(attachments::agent_upload),
    )
    .route(
        "/api/conversations/{id}/labels",
        web::post().to(labels::add),
    )
    .route(
        "/api/conversations/{id}/labels/{label_id}",
        web::delete().to(labels::remove),
    )
    .route(
        "/api/attachments/{id}",
        web::get().to(attachments::download),
    )
    .route(
        "/api/visitor/attachments",
        web::post().to(attachments::visitor_upload),
    )
    .route(
        "/api/visitor/attributes",
        web::post().to(attributes::visitor_set),
    )
    .route(
        "/api/visitors/{id}/attributes",
        web::patch().to(attributes::agent_patch),
    )
    .route("/api/canned_responses", web::get().to(canned::list))
    .route("/api/canned_responses", web::post().to(canned::create))
    .route(
        "/api/canned_responses/{id}",
        web::patch().to(canned::update),
    )
    .route(
        "/api/canned_responses/{id}",
        web::delete().to(canned::delete),
    )
    .route("/api/labels", web::get().to(labels::list))
    .route("/api/labels", web::post().to(labels::create))
    .route("/api/labels/{id}", web::patch().to(labels::update))
    .route("/api/labels/{id}", web::delete().to(labels::delete))
    .route("/api/search", web::get().to(search::search))
    .route("/api/agents", web::get().to(agents::list))
    .route("/api/agents", web::post().to(agents::create))
    .route("/api/agents/{id}", web::patch().to(agents::update))
    .route("/api/sites", web::get().to(sites::list))
    .route("/api/sites", web::post().to(sites::create))
    .route("/api/sites/{id}", web::patch().to(sites::update))
    .route("/api/sites/{id}/webhooks", web::get().to(webhooks::list))
    .route("/api/sites/{id}/webhooks", web::post().to(webhooks::create))
    .route(
        "/api/sites/{id}/webhooks/{wid}",
        web::get().to(webhooks::get),
    )
    .route(
        "/api/sites/{id}/webhooks/{wid}",
        web::patch().to(webhooks::update),
    )
    .route(
        "/api/sites/{id}/webhooks/{wid}",
        web::delete().to(webhooks::delete),
    )
    .route(
        "/api/sites/{id}/webhooks/{wid}/deliveries",
        web::get().to(webhooks::deliveries),
    )
    .route(
        "/api/sites/{id}/auto-resolve",
        web::get().to(webhooks::get_auto_resolve),
    )
    .route(
        "/api/sites/{id}/auto-resolve",
        web::put().to(webhooks::put_auto_resolve),
    )
    .route(
        "/api/sites/{id}/identity_secret",
        web::post().to(identity::create_secret),
    )
    .route(
        "/api/sites/{id}/identity_secret",
        web::delete().to(identity::delete_secret),
    )
    .route("/api/csat", web::get().to(csat::summary))
    .route(
        "/api/visitor/attributes",
        web::patch().to(visitor_attributes::patch),
    )
    .route(
        "/api/visitor/attributes",
        web::method(actix_web::http::Method::OPTIONS).to(visitor_attributes::preflight),
    )
    .route("/", web::get().to(assets::demo))
    .route("/widget.js", web::get().to(assets::widget_js))
    .route("/chat", web::get().to(assets::chat))
    .route("/console", web::get().to(assets::console))
    .route("/assets/{name}", web::get().to(assets::asset))
    .route("/api/visitor/session", web::post().to(poll::session))
    .route("/api/visitor/send", web::post().to(poll::send))
    .route("/api/visitor/poll", web::get().to(poll::poll))
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(AppError::not_found("route"))
    }));
}

static REQUEST_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Counts and times every request by its route pattern (never the raw path), tags it with
/// an `x-request-id`, and logs it (at debug) under that id.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().as_str().to_owned();
    let request_id = REQUEST_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let took = start.elapsed();
    if let Some(m) = metrics {
        m.http_requests
            .with_label_values(&[&method, &route, &status.to_string()])
            .inc();
        m.http_duration
            .with_label_values(&[&method, &route])
            .observe(took.as_secs_f64());
    }
    // The path is logged without its query string: `?token=` must never reach a log.
    log::debug!(
        "req={request_id:x} {method} {} route={route} status={status} {:.1}ms",
        res.request().path(),
        took.as_secs_f64() * 1000.0
    );
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&format!("{request_id:x}")) {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            v,
        );
    }
    Ok(res)
}

/// SHA-256 of a bearer or visitor token: what the database stores.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A fresh opaque token: 256 bits from the OS CSPRNG, hex-encoded.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The agent behind the request's bearer token.
pub struct AuthAgent {
    pub agent: Arc<Agent>,
    pub token_hash: Vec<u8>,
}

impl AuthAgent {
    pub fn require_admin(&self) -> AppResult<()> {
        if self.agent.role == Role::Admin {
            Ok(())
        } else {
            Err(AppError::forbidden("admins only"))
        }
    }

    /// Reading the durable event stream (`/api/events`, cursors): admins, and roles made
    /// for programs that consume the stream (add them here).
    pub fn require_stream_reader(&self) -> AppResult<()> {
        if matches!(self.agent.role, Role::Admin) {
            Ok(())
        } else {
            Err(AppError::forbidden("admins and bots only"))
        }
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Resolves an agent token (cached), marking the agent as seen.
pub async fn authenticate(state: &AppState, token: &str) -> AppResult<AuthAgent> {
    let hash = hash_token(token);
    let agent = state
        .cache
        .agent_by_token(&hash, state.settings.token_idle())
        .await?
        .ok_or_else(|| AppError::unauthorized("invalid or expired token"))?;
    state.mark_agent_seen(agent.id).await;
    Ok(AuthAgent {
        agent,
        token_hash: hash,
    })
}

impl FromRequest for AuthAgent {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| AppError::internal("state missing"))?;
            let token = token
                .ok_or_else(|| AppError::unauthorized("missing Authorization: Bearer token"))?;
            authenticate(&state, &token).await
        })
    }
}

/// Parses a path id, answering `not_found` for anything that is not a UUID.
pub fn parse_id(raw: &str, what: &str) -> AppResult<uuid::Uuid> {
    uuid::Uuid::parse_str(raw).map_err(|_| AppError::not_found(what))
}
