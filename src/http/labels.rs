//! Labels on conversations (issue 9). Admins manage the labels; every agent puts them on
//! and takes them off conversations; the inbox filters by one
//! (`GET /api/conversations?label=ID`).
//!
//! - `GET /api/labels` → `{items, next_cursor: null}` (any agent), by name
//! - `POST /api/labels {name, color?, description?}` → 201 (admin)
//! - `PATCH /api/labels/{id} {name?, color?, description?}`, `DELETE /api/labels/{id}` (admin)
//! - `POST /api/conversations/{id}/labels {label_id}`,
//!   `DELETE /api/conversations/{id}/labels/{label_id}` → the conversation with its
//!   `labels`; agents' consoles hear `conversation.updated` carrying the new list.
//!
//! A name is 1–50 characters, unique case-insensitively (409 otherwise); a colour is
//! `#rrggbb`.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::{parse_id, AuthAgent};
use crate::bus::Event;
use crate::db::labels::Label;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::protocol::Conversation;
use crate::state::AppState;

const MAX_NAME: usize = 50;
const MAX_DESCRIPTION: usize = 500;
const DEFAULT_COLOR: &str = "#64748b";

fn check_name(s: &str) -> AppResult<String> {
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 || n > MAX_NAME || s.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "label name must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(s.to_string())
}

fn check_color(s: &str) -> AppResult<String> {
    let s = s.trim();
    let ok = s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(AppError::bad_request("color must look like #1e88e5"))
    }
}

fn check_description(s: &str) -> AppResult<String> {
    if s.chars().count() > MAX_DESCRIPTION {
        return Err(AppError::bad_request(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(s.trim().to_string())
}

fn duplicate(e: AppError) -> AppError {
    if e.code == ErrorCode::Conflict {
        AppError::conflict("a label with this name already exists")
    } else {
        e
    }
}

pub async fn list(state: web::Data<AppState>, _auth: AuthAgent) -> AppResult<HttpResponse> {
    let items = state
        .db
        .run(async |conn| crate::db::labels::list(conn).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
pub struct CreateBody {
    name: String,
    color: Option<String>,
    #[serde(default)]
    description: String,
}

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthAgent,
    body: web::Json<CreateBody>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let b = body.into_inner();
    let now = Utc::now();
    let label = Label {
        id: Uuid::new_v4(),
        name: check_name(&b.name)?,
        color: check_color(b.color.as_deref().unwrap_or(DEFAULT_COLOR))?,
        description: check_description(&b.description)?,
        created_at: now,
        updated_at: now,
    };
    state
        .db
        .run(async |conn| crate::db::labels::insert(conn, &label).await)
        .await
        .map_err(duplicate)?;
    Ok(HttpResponse::Created().json(label))
}

#[derive(Deserialize)]
pub struct PatchBody {
    name: Option<String>,
    color: Option<String>,
    description: Option<String>,
}

pub async fn update(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<PatchBody>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let id = parse_id(&path, "label")?;
    let b = body.into_inner();
    let mut label = state
        .db
        .run(async |conn| crate::db::labels::get(conn, id).await)
        .await?
        .ok_or_else(|| AppError::not_found("label"))?;
    if let Some(n) = &b.name {
        label.name = check_name(n)?;
    }
    if let Some(c) = &b.color {
        label.color = check_color(c)?;
    }
    if let Some(d) = &b.description {
        label.description = check_description(d)?;
    }
    label.updated_at = Utc::now();
    state
        .db
        .run(async |conn| crate::db::labels::update(conn, &label).await)
        .await
        .map_err(duplicate)?;
    Ok(HttpResponse::Ok().json(label))
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let id = parse_id(&path, "label")?;
    let gone = state
        .db
        .run(async |conn| crate::db::labels::delete(conn, id).await)
        .await?;
    if !gone {
        return Err(AppError::not_found("label"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The conversation with its labels, told to every console.
async fn labelled(state: &AppState, id: Uuid) -> AppResult<Conversation> {
    let conv = state
        .db
        .run(async |conn| {
            let mut convs = crate::db::conversations::get(conn, id)
                .await?
                .into_iter()
                .collect::<Vec<_>>();
            crate::db::labels::attach(conn, &mut convs).await?;
            Ok::<_, AppError>(convs.pop())
        })
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    state.bus.publish(Event::ConversationUpdated {
        conversation: conv.clone(),
    });
    Ok(conv)
}

#[derive(Deserialize)]
pub struct AddBody {
    label_id: Uuid,
}

pub async fn add(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<AddBody>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    let label = body.label_id;
    state
        .db
        .run(async |conn| {
            if crate::db::conversations::get(conn, id).await?.is_none() {
                return Err(AppError::not_found("conversation"));
            }
            if crate::db::labels::get(conn, label).await?.is_none() {
                return Err(AppError::not_found("label"));
            }
            crate::db::labels::add(conn, id, label).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(labelled(&state, id).await?))
}

pub async fn remove(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path.0, "conversation")?;
    let label = parse_id(&path.1, "label")?;
    state
        .db
        .run(async |conn| crate::db::labels::remove(conn, id, label).await)
        .await?;
    Ok(HttpResponse::Ok().json(labelled(&state, id).await?))
}
