//! `PATCH /api/visitor/attributes?site=KEY&token=T`: the widget's `kefu.setAttributes()`.
//! The body is a JSON object merged into the visitor's `attributes` (top-level keys
//! replace their old values, other keys stay); the answer is the visitor. Agents see the
//! attributes in the conversation's visitor profile.
//!
//! The widget runs on the host's origin, so the browser sends a CORS preflight first:
//! `OPTIONS` on the same path answers it for the origins the site allows.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::poll::{site_for, visitor_for, with_cors};
use crate::actors::cache::CacheKey;
use crate::domain::limits;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct VisitorQuery {
    site: Option<String>,
    token: Option<String>,
}

pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<VisitorQuery>,
    body: web::Json<serde_json::Value>,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let attributes = match body.into_inner() {
        v @ serde_json::Value::Object(_) => limits::validate_attributes(Some(v))?,
        _ => return Err(AppError::bad_request("the body must be a JSON object")),
    };
    let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
    let id = visitor.id;
    let updated = state
        .db
        .run(async |conn| {
            crate::db::visitors::update_profile(conn, id, None, None, attributes).await
        })
        .await?;
    state.cache.invalidate(CacheKey::Visitor(id)).await;
    Ok(with_cors(&req, &site, HttpResponse::Ok().json(updated)))
}

/// The CORS preflight of [`patch`].
pub async fn preflight(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<VisitorQuery>,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let mut res = HttpResponse::NoContent();
    res.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "PATCH"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
    Ok(with_cors(&req, &site, res.finish()))
}
