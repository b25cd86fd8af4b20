//! Visitor custom attributes (issue 9), see [`crate::domain::attributes`] for the rules.
//!
//! - `PATCH /api/visitors/{id}/attributes {key: value|null, …}` (agents) → the visitor.
//! - `POST /api/visitor/attributes?site=KEY&token=T {key: value|null, …}` (the visitor
//!   itself, e.g. the widget's `kefu.setAttributes`) → `{visitor}`. The body is JSON sent
//!   as any content type (`text/plain` keeps it a CORS-simple request). The WebSocket
//!   frame `profile.update {attributes}` does the same.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use uuid::Uuid;

use super::poll::{site_for, visitor_for, with_cors};
use super::{parse_id, AuthAgent};
use crate::actors::cache::CacheKey;
use crate::domain::limits;
use crate::error::{AppError, AppResult};
use crate::protocol::Visitor;
use crate::state::AppState;

async fn patch(state: &AppState, id: Uuid, body: &[u8]) -> AppResult<Visitor> {
    if body.len() > limits::MAX_ATTRIBUTES_BYTES {
        return Err(AppError::too_large(format!(
            "attributes are larger than {} bytes",
            limits::MAX_ATTRIBUTES_BYTES
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(AppError::bad_request("attributes must be a JSON object"));
    }
    let patch = limits::validate_attributes(Some(value))?;
    let v = state
        .db
        .run(async |conn| {
            if crate::db::visitors::get(conn, id).await?.is_none() {
                return Err(AppError::not_found("visitor"));
            }
            crate::db::visitors::update_profile(conn, id, None, None, patch).await
        })
        .await?;
    state.cache.invalidate(CacheKey::Visitor(id)).await;
    Ok(v)
}

pub async fn agent_patch(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "visitor")?;
    let v = patch(&state, id, &body).await?;
    Ok(HttpResponse::Ok().json(v))
}

#[derive(serde::Deserialize)]
pub struct VisitorQuery {
    site: Option<String>,
    token: Option<String>,
}

pub async fn visitor_set(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<VisitorQuery>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
    let v = patch(&state, visitor.id, &body).await?;
    Ok(with_cors(
        &req,
        &site,
        HttpResponse::Ok().json(serde_json::json!({ "visitor": v })),
    ))
}
