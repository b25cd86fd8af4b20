//! `/api/sites`: site management (admins only). Answers carry the generated `widget_key`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{parse_id, AuthAgent};
use crate::actors::cache::CacheKey;
use crate::db::sites::SitePatch;
use crate::domain::business_hours::BusinessHours;
use crate::error::{AppError, AppResult};
use crate::protocol::Site;
use crate::state::AppState;

const MAX_TEXT: usize = 2000;

pub async fn list(state: web::Data<AppState>, auth: AuthAgent) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let items = state
        .db
        .run(async |conn| crate::db::sites::list(conn).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    greeting: String,
    #[serde(default)]
    offline_message: String,
    #[serde(default)]
    business_hours: Option<BusinessHours>,
}

/// `null` and "absent" differ in a patch: `Some(None)` is an explicit null.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A checked schedule as stored.
fn hours_value(h: &BusinessHours) -> AppResult<serde_json::Value> {
    h.validate()?;
    serde_json::to_value(h).map_err(|e| AppError::internal(format!("business hours: {e}")))
}

/// Origins are compared as `scheme://host[:port]`, lower-case, without a trailing slash.
pub fn normalize_origin(o: &str) -> AppResult<String> {
    let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
    let ok = (o.starts_with("http://") || o.starts_with("https://"))
        && !o["https://".len().min(o.len())..].contains('/')
        && o.len() <= 255;
    if ok {
        Ok(o)
    } else {
        Err(AppError::bad_request(format!(
            "allowed origin {o:?} must look like https://example.com"
        )))
    }
}

fn check_text(name: &str, v: &str) -> AppResult<String> {
    if v.chars().count() > MAX_TEXT {
        return Err(AppError::bad_request(format!(
            "{name} is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(v.trim().to_string())
}

fn origins(list: &[String]) -> AppResult<Vec<String>> {
    if list.len() > 100 {
        return Err(AppError::bad_request("at most 100 allowed origins"));
    }
    list.iter().map(|o| normalize_origin(o)).collect()
}

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthAgent,
    body: web::Json<CreateBody>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let b = body.into_inner();
    let name = check_text("name", &b.name)?;
    if name.is_empty() {
        return Err(AppError::bad_request("name is required"));
    }
    let allowed = origins(&b.allowed_origins)?;
    let greeting = check_text("greeting", &b.greeting)?;
    let offline = check_text("offline_message", &b.offline_message)?;
    let hours = b.business_hours.as_ref().map(hours_value).transpose()?;
    let site = state
        .db
        .run(async |conn| {
            let site = crate::db::sites::create(conn, name, allowed, greeting, offline).await?;
            let Some(hours) = hours else { return Ok(site) };
            let patch = SitePatch {
                business_hours: Some(Some(hours)),
                ..SitePatch::default()
            };
            let updated = crate::db::sites::update(conn, site.id, patch).await?;
            Ok(updated.unwrap_or(site))
        })
        .await?;
    Ok(HttpResponse::Created().json(site))
}

#[derive(Deserialize)]
pub struct PatchBody {
    name: Option<String>,
    allowed_origins: Option<Vec<String>>,
    greeting: Option<String>,
    offline_message: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    business_hours: Option<Option<BusinessHours>>,
}

pub async fn update(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<PatchBody>,
) -> AppResult<web::Json<Site>> {
    auth.require_admin()?;
    let id = parse_id(&path, "site")?;
    let b = body.into_inner();
    let patch = SitePatch {
        name: match b.name {
            Some(n) if check_text("name", &n)?.is_empty() => {
                return Err(AppError::bad_request("name cannot be empty"))
            }
            Some(n) => Some(check_text("name", &n)?),
            None => None,
        },
        allowed_origins: b.allowed_origins.as_deref().map(origins).transpose()?,
        greeting: b
            .greeting
            .as_deref()
            .map(|g| check_text("greeting", g))
            .transpose()?,
        offline_message: b
            .offline_message
            .as_deref()
            .map(|g| check_text("offline_message", g))
            .transpose()?,
        business_hours: match &b.business_hours {
            None => None,
            Some(None) => Some(None),
            Some(Some(h)) => Some(Some(hours_value(h)?)),
        },
        updated_at: None,
    };
    let site = state
        .db
        .run(async |conn| crate::db::sites::update(conn, id, patch).await)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    state
        .cache
        .invalidate(CacheKey::Site(site.widget_key.clone()))
        .await;
    Ok(web::Json(site))
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_normalize() {
        assert_eq!(
            super::normalize_origin("HTTPS://Shop.example.com/").expect("ok"),
            "https://shop.example.com"
        );
        assert!(super::normalize_origin("shop.example.com").is_err());
        assert!(super::normalize_origin("https://a.com/path").is_err());
        assert!(super::normalize_origin("http://localhost:8080").is_ok());
    }
}
