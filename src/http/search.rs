//! `GET /api/search?q=TEXT[&site_id=][&limit=]` (agents): full-text search over message
//! bodies (private notes included — only agents search, and visitors never get results)
//! and over visitors' names and emails. Answers
//! `{"messages":[{message, conversation:{id, site_id, status}, visitor:{id, name, email}}],
//!   "visitors":[{id, site_id, name, email, last_seen_at, conversation_id}]}`,
//! newest first, at most `limit` (default 20, at most 50) of each. English words are
//! stemmed (`refunds` finds `refund`); Chinese, Japanese and Korean text matches by
//! character bigrams (`退款` finds `我要退款`), see [`crate::domain::search`].

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::AuthAgent;
use crate::domain::search::{self, MAX_QUERY_CHARS};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 50;

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    site_id: Option<String>,
    limit: Option<i64>,
}

pub async fn search(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    q: web::Query<SearchQuery>,
) -> AppResult<HttpResponse> {
    let text = q.q.as_deref().unwrap_or("").trim().to_string();
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::bad_request(format!(
            "q is longer than {MAX_QUERY_CHARS} characters"
        )));
    }
    let parsed = search::parse(&text)
        .ok_or_else(|| AppError::bad_request("q (what to search for) is required"))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let site = match q.site_id.as_deref() {
        None | Some("") => None,
        Some(s) => {
            Some(Uuid::parse_str(s).map_err(|_| AppError::bad_request("site_id must be a uuid"))?)
        }
    };
    let (messages, visitors) = state
        .db
        .run(async |conn| {
            let m = crate::db::search::messages(conn, &parsed, site, limit).await?;
            let v = crate::db::search::visitors(conn, &text, site, limit).await?;
            Ok::<_, AppError>((m, v))
        })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "messages": messages,
        "visitors": visitors,
    })))
}
