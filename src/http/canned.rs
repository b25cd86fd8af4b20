//! `/api/canned_responses`: saved replies that agents insert by typing `/shortcut` in the
//! console's reply box.
//!
//! Shared responses (`shared: true`, no owner) are managed by admins, for one site
//! (`site_id`) or every site (`site_id: null`); every agent lists and uses them. Each
//! agent manages its own (`shared: false`), which nobody else sees. An agent changing a
//! shared one gets 403; anyone touching another agent's own one gets 404.
//!
//! - `GET /api/canned_responses[?site_id=]` → `{items, next_cursor: null}`, by shortcut
//! - `POST /api/canned_responses {shortcut, body, title?, site_id?, shared?}` → 201
//! - `PATCH /api/canned_responses/{id} {shortcut?, body?, title?, site_id?}`
//! - `DELETE /api/canned_responses/{id}` → 204
//!
//! A shortcut is 1–32 letters, digits, `_` or `-`, unique (case-insensitively) among the
//! shared ones of a site and among an agent's own; a duplicate answers 409.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::{parse_id, AuthAgent};
use crate::db::canned::CannedResponse;
use crate::domain::limits;
use crate::error::{AppError, AppResult};
use crate::protocol::Role;
use crate::state::AppState;

const MAX_SHORTCUT: usize = 32;
const MAX_TITLE: usize = 200;

fn check_shortcut(s: &str) -> AppResult<String> {
    let s = s.trim().trim_start_matches('/');
    let n = s.chars().count();
    if n == 0
        || n > MAX_SHORTCUT
        || !s
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(AppError::bad_request(format!(
            "shortcut must be 1 to {MAX_SHORTCUT} letters, digits, '_' or '-'"
        )));
    }
    Ok(s.to_string())
}

fn check_title(s: &str) -> AppResult<String> {
    let s = s.trim();
    if s.chars().count() > MAX_TITLE {
        return Err(AppError::bad_request(format!(
            "title is longer than {MAX_TITLE} characters"
        )));
    }
    Ok(s.to_string())
}

#[derive(Deserialize)]
pub struct ListQuery {
    site_id: Option<String>,
}

pub async fn list(
    state: web::Data<AppState>,
    auth: AuthAgent,
    q: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let site = match q.site_id.as_deref() {
        None | Some("") => None,
        Some(s) => {
            Some(Uuid::parse_str(s).map_err(|_| AppError::bad_request("site_id must be a uuid"))?)
        }
    };
    let me = auth.agent.id;
    let rows = state
        .db
        .run(async |conn| crate::db::canned::visible(conn, me, site).await)
        .await?;
    let items: Vec<_> = rows.iter().map(CannedResponse::view).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
pub struct CreateBody {
    shortcut: String,
    body: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    site_id: Option<Uuid>,
    #[serde(default)]
    shared: bool,
}

async fn ensure_site(state: &AppState, site: Option<Uuid>) -> AppResult<()> {
    let Some(id) = site else { return Ok(()) };
    let found = state
        .db
        .run(async |conn| crate::db::sites::get(conn, id).await)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| AppError::bad_request("site_id names no site"))
}

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthAgent,
    body: web::Json<CreateBody>,
) -> AppResult<HttpResponse> {
    let b = body.into_inner();
    if b.shared {
        auth.require_admin()
            .map_err(|_| AppError::forbidden("only admins create shared canned responses"))?;
    }
    let shortcut = check_shortcut(&b.shortcut)?;
    let text = limits::validate_body(&b.body)?;
    let title = check_title(&b.title)?;
    ensure_site(&state, b.site_id).await?;
    let now = Utc::now();
    let row = CannedResponse {
        id: Uuid::new_v4(),
        site_id: b.site_id,
        owner_id: (!b.shared).then_some(auth.agent.id),
        shortcut,
        title,
        body: text,
        created_at: now,
        updated_at: now,
    };
    state
        .db
        .run(async |conn| crate::db::canned::insert(conn, &row).await)
        .await
        .map_err(duplicate)?;
    Ok(HttpResponse::Created().json(row.view()))
}

fn duplicate(e: AppError) -> AppError {
    if e.code == crate::error::ErrorCode::Conflict {
        AppError::conflict("a canned response with this shortcut already exists here")
    } else {
        e
    }
}

/// The response, if `auth` may change it: 404 for another agent's own one, 403 for a
/// shared one unless an admin asks.
async fn editable(state: &AppState, auth: &AuthAgent, id: Uuid) -> AppResult<CannedResponse> {
    let row = state
        .db
        .run(async |conn| crate::db::canned::get(conn, id).await)
        .await?
        .ok_or_else(|| AppError::not_found("canned response"))?;
    match row.owner_id {
        Some(owner) if owner == auth.agent.id => Ok(row),
        Some(_) => Err(AppError::not_found("canned response")),
        None if auth.agent.role == Role::Admin => Ok(row),
        None => Err(AppError::forbidden(
            "only admins change shared canned responses",
        )),
    }
}

/// `site_id` absent: unchanged; `null`: every site.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
pub struct PatchBody {
    shortcut: Option<String>,
    body: Option<String>,
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    site_id: Option<Option<Uuid>>,
}

pub async fn update(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<PatchBody>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "canned response")?;
    let mut row = editable(&state, &auth, id).await?;
    let b = body.into_inner();
    if let Some(s) = &b.shortcut {
        row.shortcut = check_shortcut(s)?;
    }
    if let Some(t) = &b.body {
        row.body = limits::validate_body(t)?;
    }
    if let Some(t) = &b.title {
        row.title = check_title(t)?;
    }
    if let Some(site) = b.site_id {
        ensure_site(&state, site).await?;
        row.site_id = site;
    }
    row.updated_at = Utc::now();
    state
        .db
        .run(async |conn| crate::db::canned::update(conn, &row).await)
        .await
        .map_err(duplicate)?;
    Ok(HttpResponse::Ok().json(row.view()))
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "canned response")?;
    editable(&state, &auth, id).await?;
    state
        .db
        .run(async |conn| crate::db::canned::delete(conn, id).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
