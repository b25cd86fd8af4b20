//! WebSocket handshakes: `/ws/visitor` and `/ws/agent`. Everything that can be refused is
//! refused here, before the upgrade, with a plain HTTP error.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

use super::authenticate;
use super::identity::{resolve_visitor, Presented};
use crate::actors::session::{Peer, WsSession};
use crate::domain::limits::TokenBucket;
use crate::error::{AppError, AppResult};
use crate::http::widget::origin_allowed;
use crate::state::AppState;

/// Hard cap on one frame at the codec; larger frames close the socket with 1009.
/// Frames between `max_frame_bytes` and this get a `too_large` error and the socket stays.
const CODEC_MAX_FRAME: usize = 1024 * 1024;

#[derive(Deserialize)]
pub struct VisitorQuery {
    site: Option<String>,
    token: Option<String>,
    /// Identity verification: the host's user id and its HMAC (see `http::identity`).
    user_id: Option<String>,
    user_hash: Option<String>,
}

fn start(req: &HttpRequest, stream: web::Payload, session: WsSession) -> AppResult<HttpResponse> {
    ws::WsResponseBuilder::new(session, req, stream)
        .frame_size(CODEC_MAX_FRAME)
        .start()
        .map_err(|e| AppError::bad_request(format!("WebSocket handshake failed: {e}")))
}

pub async fn visitor(
    state: web::Data<AppState>,
    req: HttpRequest,
    stream: web::Payload,
    q: web::Query<VisitorQuery>,
) -> AppResult<HttpResponse> {
    let key = q
        .site
        .as_deref()
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| AppError::bad_request("site (the widget key) is required"))?;
    let site = state
        .cache
        .site_by_key(key)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if !origin_allowed(&site, origin) && !super::assets::own_page(&req, origin) {
        return Err(AppError::forbidden(
            "this page's origin may not use this site",
        ));
    }
    let permit = state.admit(req.peer_addr().map(|a| a.ip()))?;
    let (visitor, token, conversation) = resolve_visitor(
        &state,
        &site,
        Presented {
            token: q.token.as_deref(),
            user_id: q.user_id.as_deref(),
            user_hash: q.user_hash.as_deref(),
        },
    )
    .await?;
    let agents_online = state.cache.agents_online(state.available_window()).await? > 0;
    let peer = Peer::Visitor {
        site: Arc::clone(&site),
        visitor: Box::new(visitor),
        token,
        conversation: conversation.map(Box::new),
        agents_online,
        bucket: TokenBucket::new(
            state.settings.visitor_rate,
            state.settings.visitor_burst,
            Instant::now(),
        ),
    };
    start(
        &req,
        stream,
        WsSession::new(state.get_ref().clone(), peer, permit),
    )
}

#[derive(Deserialize)]
pub struct AgentQuery {
    token: Option<String>,
}

pub async fn agent(
    state: web::Data<AppState>,
    req: HttpRequest,
    stream: web::Payload,
    q: web::Query<AgentQuery>,
) -> AppResult<HttpResponse> {
    let token = q
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AppError::unauthorized("token is required"))?;
    let auth = authenticate(&state, token).await?;
    let permit = state.admit(req.peer_addr().map(|a| a.ip()))?;
    let peer = Peer::Agent {
        agent: Box::new((*auth.agent).clone()),
        token_hash: hex::encode(&auth.token_hash),
        last_seen_write: Instant::now(),
    };
    start(
        &req,
        stream,
        WsSession::new(state.get_ref().clone(), peer, permit),
    )
}
