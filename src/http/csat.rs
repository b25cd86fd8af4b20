//! `GET /api/csat[?site_id=&from=&to=]`: the CSAT summary (any agent) — average rating,
//! number of ratings and the count of each score. The ratings themselves are given by
//! visitors with the `rating` frame (socket or long-polling `send`).

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AuthAgent;
use crate::db::csat::Summary;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct CsatQuery {
    site_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn instant(name: &str, v: Option<&str>) -> AppResult<Option<DateTime<Utc>>> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    AppError::bad_request(format!(
                        "{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

pub async fn summary(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    q: web::Query<CsatQuery>,
) -> AppResult<web::Json<Summary>> {
    let site = q
        .site_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            uuid::Uuid::parse_str(s).map_err(|_| AppError::bad_request("site_id must be a uuid"))
        })
        .transpose()?;
    let from = instant("from", q.from.as_deref())?;
    let to = instant("to", q.to.as_deref())?;
    let s = state
        .db
        .run(async |conn| crate::db::csat::summary(conn, site, from, to).await)
        .await?;
    Ok(web::Json(s))
}
