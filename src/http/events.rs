//! `/api/events` and `/api/event-cursors/{name}`: the durable event stream for consumers
//! outside the process (a bot, an integration). Admins and stream-reading roles only
//! ([`AuthAgent::require_stream_reader`]).

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::AuthAgent;
use crate::db::events;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_WAIT_SECS: u64 = 30;
/// A long poll looks again at least this often: an event committed elsewhere may become
/// readable (its transaction no longer the oldest running) without any signal here.
const RECHECK: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
pub struct ReadQuery {
    after: Option<i64>,
    limit: Option<i64>,
    wait: Option<u64>,
}

/// `GET /api/events?after=&limit=&wait=`: events after `after`, oldest first. With `wait`
/// (seconds, ≤ 30) and nothing to answer yet, the request waits for the first event.
pub async fn read(
    state: web::Data<AppState>,
    auth: AuthAgent,
    q: web::Query<ReadQuery>,
) -> AppResult<HttpResponse> {
    auth.require_stream_reader()?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(AppError::bad_request("after must be ≥ 0"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=events::MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {}",
            events::MAX_PAGE
        )));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(AppError::bad_request(format!(
            "wait must be 0 to {MAX_WAIT_SECS} seconds"
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before the read, so an event published during it is not missed.
        let signal = state.bus.stream_signal.clone();
        let woken = signal.notified();
        let items = state
            .db
            .run(async |conn| events::read_after(conn, after, limit).await)
            .await?;
        let now = Instant::now();
        if !items.is_empty() || now >= deadline {
            let next_after = items.last().map(|e| e.id).unwrap_or(after);
            return Ok(HttpResponse::Ok().json(serde_json::json!({
                "events": items,
                "next_after": next_after,
            })));
        }
        let nap = RECHECK.min(deadline - now);
        let _ = tokio::time::timeout(nap, woken).await;
    }
}

/// `GET /api/event-cursors/{name}`: `{name, after}` (0 for a cursor never stored).
pub async fn get_cursor(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    auth.require_stream_reader()?;
    let name = path.into_inner();
    events::validate_cursor_name(&name)?;
    let after = state
        .db
        .run(async |conn| events::cursor(conn, &name).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "name": name, "after": after })))
}

#[derive(Deserialize)]
pub struct CursorBody {
    after: i64,
}

/// `PUT /api/event-cursors/{name} {after}`: stores a consumer's position.
pub async fn put_cursor(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<CursorBody>,
) -> AppResult<HttpResponse> {
    auth.require_stream_reader()?;
    let name = path.into_inner();
    events::validate_cursor_name(&name)?;
    let after = body.after;
    if after < 0 {
        return Err(AppError::bad_request("after must be ≥ 0"));
    }
    state
        .db
        .run(async |conn| events::set_cursor(conn, &name, after).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "name": name, "after": after })))
}
