//! `/api/sites/{id}/webhooks` (admin): webhooks per site and their delivery log; and
//! `/api/sites/{id}/auto-resolve` (admin): the site's idle limit before auto-resolve.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{new_token, parse_id, AuthAgent};
use crate::db::webhooks::{self, WebhookFields, EVENT_TYPES};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

const MAX_URL: usize = 2000;
const MAX_WEBHOOKS_PER_SITE: usize = 20;
const LOG_PAGE: i64 = 50;

/// An admin's request about the site named in the path: its id, once it is known to exist.
async fn admin_site(state: &AppState, auth: &AuthAgent, path: &str) -> AppResult<Uuid> {
    auth.require_admin()?;
    let site_id = parse_id(path, "site")?;
    state
        .db
        .run(async |conn| crate::db::sites::get(conn, site_id).await)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    Ok(site_id)
}

fn check_url(url: &str) -> AppResult<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains(char::is_whitespace)
    });
    if !host_ok || url.len() > MAX_URL || url.chars().any(char::is_control) {
        return Err(AppError::bad_request(
            "url must be an http:// or https:// address of at most 2000 characters",
        ));
    }
    Ok(url.to_string())
}

fn check_events(list: Option<Vec<String>>) -> AppResult<Vec<String>> {
    let list = match list {
        None => EVENT_TYPES.iter().map(|s| s.to_string()).collect(),
        Some(l) => l,
    };
    if list.is_empty() {
        return Err(AppError::bad_request("events must name at least one event"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in list {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(AppError::bad_request(format!(
                "unknown event {e:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

fn new_secret() -> String {
    format!("whsec_{}", new_token())
}

pub async fn list(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let site_id = admin_site(&state, &auth, &path).await?;
    let items = state
        .db
        .run(async |conn| webhooks::list(conn, site_id).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    events: Option<Vec<String>>,
    #[serde(default)]
    include_private: bool,
    active: Option<bool>,
}

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<CreateBody>,
) -> AppResult<HttpResponse> {
    let site_id = admin_site(&state, &auth, &path).await?;
    let body = body.into_inner();
    let fields = WebhookFields {
        url: check_url(&body.url)?,
        events: check_events(body.events)?,
        include_private: body.include_private,
        active: body.active.unwrap_or(true),
    };
    let secret = new_secret();
    let hook = state
        .db
        .run(async |conn| {
            if webhooks::list(conn, site_id).await?.len() >= MAX_WEBHOOKS_PER_SITE {
                return Err(AppError::conflict(format!(
                    "a site has at most {MAX_WEBHOOKS_PER_SITE} webhooks"
                )));
            }
            webhooks::create(conn, site_id, &fields, &secret).await
        })
        .await?;
    Ok(HttpResponse::Created().json(hook))
}

async fn load(state: &AppState, site: &str, id: &str) -> AppResult<webhooks::Webhook> {
    let site_id = parse_id(site, "site")?;
    let id = parse_id(id, "webhook")?;
    state
        .db
        .run(async |conn| webhooks::get(conn, site_id, id).await)
        .await?
        .ok_or_else(|| AppError::not_found("webhook"))
}

pub async fn get(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (site, id) = path.into_inner();
    Ok(HttpResponse::Ok().json(load(&state, &site, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    include_private: Option<bool>,
    active: Option<bool>,
    /// `true` replaces the secret with a new one.
    #[serde(default)]
    rotate_secret: bool,
}

pub async fn update(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<(String, String)>,
    body: web::Json<PatchBody>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (site, id) = path.into_inner();
    let old = load(&state, &site, &id).await?;
    let body = body.into_inner();
    let fields = WebhookFields {
        url: match body.url {
            Some(u) => check_url(&u)?,
            None => old.url,
        },
        events: match body.events {
            Some(e) => check_events(Some(e))?,
            None => old.events,
        },
        include_private: body.include_private.unwrap_or(old.include_private),
        active: body.active.unwrap_or(old.active),
    };
    let secret = body.rotate_secret.then(new_secret);
    let hook = state
        .db
        .run(async |conn| {
            webhooks::update(conn, old.site_id, old.id, &fields, secret.as_deref()).await
        })
        .await?
        .ok_or_else(|| AppError::not_found("webhook"))?;
    Ok(HttpResponse::Ok().json(hook))
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (site, id) = path.into_inner();
    let old = load(&state, &site, &id).await?;
    state
        .db
        .run(async |conn| webhooks::delete(conn, old.site_id, old.id).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct LogQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

/// The delivery log, newest first: `{items, next_cursor}` (`before=<next_cursor>` pages).
pub async fn deliveries(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<(String, String)>,
    q: web::Query<LogQuery>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let (site, id) = path.into_inner();
    let hook = load(&state, &site, &id).await?;
    let limit = q.limit.unwrap_or(LOG_PAGE);
    if !(1..=200).contains(&limit) {
        return Err(AppError::bad_request("limit must be 1 to 200"));
    }
    let before = q.before;
    let items = state
        .db
        .run(async |conn| webhooks::log(conn, hook.id, before, limit).await)
        .await?;
    let next = if items.len() as i64 == limit {
        items.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next })))
}

/// `GET /api/sites/{id}/auto-resolve`: `{idle_secs, source}`: the site's own limit, or
/// the global `KEFU_AUTO_RESOLVE_SECS` (`source: "global"`). 0 = never.
pub async fn get_auto_resolve(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let site_id = admin_site(&state, &auth, &path).await?;
    let own = state
        .db
        .run(async |conn| crate::db::auto_resolve::policy(conn, site_id).await)
        .await?;
    Ok(HttpResponse::Ok().json(auto_resolve_answer(&state, own)))
}

fn auto_resolve_answer(state: &AppState, own: Option<i32>) -> serde_json::Value {
    match own {
        Some(s) => serde_json::json!({ "idle_secs": s, "source": "site" }),
        None => serde_json::json!({
            "idle_secs": state.settings.auto_resolve_secs,
            "source": "global",
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoResolveBody {
    /// Seconds (0 = never for this site); `null` follows the global setting again.
    idle_secs: Option<i64>,
}

pub async fn put_auto_resolve(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<AutoResolveBody>,
) -> AppResult<HttpResponse> {
    let site_id = admin_site(&state, &auth, &path).await?;
    let secs = match body.idle_secs {
        None => None,
        Some(s) if (0..=365 * 86_400).contains(&s) => Some(s as i32),
        Some(_) => {
            return Err(AppError::bad_request(
                "idle_secs must be 0 (never) to 31536000 seconds, or null",
            ))
        }
    };
    state
        .db
        .run(async |conn| crate::db::auto_resolve::set_policy(conn, site_id, secs).await)
        .await?;
    Ok(HttpResponse::Ok().json(auto_resolve_answer(&state, secs)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert!(super::check_url("https://example.com/hook").is_ok());
        assert!(super::check_url("http://127.0.0.1:8080").is_ok());
        assert!(super::check_url("ftp://example.com").is_err());
        assert!(super::check_url("https://").is_err());
        assert!(super::check_url("https:// example.com").is_err());
    }
}
