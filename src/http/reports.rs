//! `GET /api/reports?from=&to=&site=`: conversations per day, first response and resolution
//! times (median, p90), per agent and per site, and the CSAT average. Any agent may read
//! it, like `/api/stats`.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::AuthAgent;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The default range: the last 30 days.
const DEFAULT_DAYS: i64 = 30;
/// The longest range one report covers.
const MAX_DAYS: i64 = 366;

#[derive(Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    site: Option<String>,
}

fn day(name: &str, raw: &str) -> AppResult<DateTime<Utc>> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| AppError::bad_request(format!("{name} must be a date like 2026-12-01")))
}

pub async fn report(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    q: web::Query<ReportQuery>,
) -> AppResult<HttpResponse> {
    // `to` names the last day included.
    let to = match q.to.as_deref().filter(|s| !s.is_empty()) {
        Some(t) => day("to", t)? + Duration::days(1),
        None => day("to", &Utc::now().format("%Y-%m-%d").to_string())? + Duration::days(1),
    };
    let from = match q.from.as_deref().filter(|s| !s.is_empty()) {
        Some(f) => day("from", f)?,
        None => to - Duration::days(DEFAULT_DAYS),
    };
    if from >= to {
        return Err(AppError::bad_request("from must not be after to"));
    }
    if to - from > Duration::days(MAX_DAYS) {
        return Err(AppError::bad_request(format!(
            "a report covers at most {MAX_DAYS} days"
        )));
    }
    let site = match q.site.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            Some(Uuid::parse_str(s).map_err(|_| AppError::bad_request("site must be a site id"))?)
        }
        None => None,
    };
    let report = state
        .db
        .run(async |conn| crate::db::reports::report(conn, from, to, site).await)
        .await?;
    Ok(HttpResponse::Ok().json(report))
}
