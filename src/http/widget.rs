//! `GET /api/config?site=KEY`: the public widget configuration, served from the cache.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};
use crate::protocol::Site;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ConfigQuery {
    site: Option<String>,
}

#[derive(Serialize)]
struct Colours {
    primary: &'static str,
    background: &'static str,
    text: &'static str,
}

#[derive(Serialize)]
struct WidgetConfig<'a> {
    site_id: uuid::Uuid,
    name: &'a str,
    greeting: &'a str,
    offline_message: &'a str,
    agents_online: bool,
    /// False outside the site's business hours (the widget then shows the offline message
    /// and asks for an email); always true for a site without a schedule.
    within_business_hours: bool,
    next_open_at: Option<chrono::DateTime<chrono::Utc>>,
    colours: Colours,
}

/// True when a browser page at `origin` may use the site (empty list: any page).
pub fn origin_allowed(site: &Site, origin: Option<&str>) -> bool {
    if site.allowed_origins.is_empty() {
        return true;
    }
    let Some(origin) = origin else {
        return false;
    };
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    site.allowed_origins.contains(&o)
}

pub async fn config(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ConfigQuery>,
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
    let online = state.cache.agents_online(state.available_window()).await? > 0;
    let now = chrono::Utc::now();
    let body = WidgetConfig {
        site_id: site.id,
        name: &site.name,
        greeting: &site.greeting,
        offline_message: &site.offline_message,
        agents_online: online,
        within_business_hours: site.is_open(now),
        next_open_at: site.business_hours.as_ref().and_then(|h| h.next_open(now)),
        colours: Colours {
            primary: "#2563eb",
            background: "#ffffff",
            text: "#111827",
        },
    };
    let mut res = HttpResponse::Ok();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if let Some(o) = origin {
        if origin_allowed(&site, Some(o)) {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.to_string()));
            res.insert_header((header::VARY, "Origin"));
        }
    }
    Ok(res.json(body))
}
