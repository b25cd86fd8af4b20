//! `/api/agents`: team management (admins only).

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{parse_id, AuthAgent};
use crate::actors::cache::CacheKey;
use crate::bus::Event;
use crate::db::agents::AgentPatch;
use crate::error::{AppError, AppResult};
use crate::protocol::{Agent, Role};
use crate::state::AppState;

pub async fn list(state: web::Data<AppState>, auth: AuthAgent) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let items = state
        .db
        .run(async |conn| crate::db::agents::list(conn).await)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
pub struct CreateBody {
    email: String,
    name: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    max_open: Option<i32>,
}

fn parse_role(role: Option<&str>) -> AppResult<Role> {
    match role {
        None => Ok(Role::Agent),
        Some(r) => {
            Role::parse(r).ok_or_else(|| AppError::bad_request("role must be admin or agent"))
        }
    }
}

fn check_max_open(n: i32) -> AppResult<i32> {
    if (0..=1000).contains(&n) {
        Ok(n)
    } else {
        Err(AppError::bad_request("max_open must be 0 to 1000"))
    }
}

pub fn check_email(email: &str) -> AppResult<()> {
    let e = email.trim();
    if e.len() > 254 || !e.contains('@') || e.starts_with('@') || e.ends_with('@') {
        return Err(AppError::bad_request("email is not an email address"));
    }
    Ok(())
}

pub fn check_name(name: &str) -> AppResult<()> {
    let n = name.trim().chars().count();
    if n == 0 || n > 200 {
        return Err(AppError::bad_request("name must be 1 to 200 characters"));
    }
    Ok(())
}

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthAgent,
    body: web::Json<CreateBody>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let b = body.into_inner();
    check_email(&b.email)?;
    check_name(&b.name)?;
    crate::password::check_strength(&b.password)?;
    let role = parse_role(b.role.as_deref())?;
    let max_open = check_max_open(b.max_open.unwrap_or(5))?;
    let password = b.password;
    let phc = web::block(move || crate::password::hash(&password))
        .await
        .map_err(AppError::internal)??;
    let agent = state
        .db
        .run(async |conn| {
            crate::db::agents::create(conn, &b.email, &b.name, role, &phc, max_open).await
        })
        .await?;
    Ok(HttpResponse::Created().json(agent))
}

#[derive(Deserialize)]
pub struct PatchBody {
    name: Option<String>,
    role: Option<String>,
    max_open: Option<i32>,
    disabled: Option<bool>,
    password: Option<String>,
    status: Option<String>,
}

pub async fn update(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<PatchBody>,
) -> AppResult<web::Json<Agent>> {
    auth.require_admin()?;
    let id = parse_id(&path, "agent")?;
    let b = body.into_inner();
    let mut patch = AgentPatch::default();
    if let Some(n) = &b.name {
        check_name(n)?;
        patch.name = Some(n.trim().to_string());
    }
    if let Some(r) = &b.role {
        patch.role = Some(parse_role(Some(r))?.as_str().to_string());
    }
    if let Some(m) = b.max_open {
        patch.max_open = Some(check_max_open(m)?);
    }
    if let Some(s) = &b.status {
        let s = crate::protocol::AgentStatus::parse(s)
            .ok_or_else(|| AppError::bad_request("status must be online, away or offline"))?;
        patch.status = Some(s.as_str().to_string());
    }
    patch.disabled = b.disabled;
    if let Some(p) = b.password {
        crate::password::check_strength(&p)?;
        patch.password_hash = Some(
            web::block(move || crate::password::hash(&p))
                .await
                .map_err(AppError::internal)??,
        );
    }
    if id == auth.agent.id && (b.disabled == Some(true) || patch.role.as_deref() == Some("agent")) {
        return Err(AppError::conflict(
            "admins cannot disable or demote themselves",
        ));
    }
    let revoke = b.disabled == Some(true) || patch.password_hash.is_some();
    let agent = state
        .db
        .run(async |conn| {
            let a = crate::db::agents::update(conn, id, patch)
                .await?
                .ok_or_else(|| AppError::not_found("agent"))?;
            if revoke {
                crate::db::agents::delete_sessions_of(conn, id).await?;
            }
            Ok(a)
        })
        .await?;
    state.cache.invalidate(CacheKey::AllTokens).await;
    state.cache.forget_agents_online();
    if revoke {
        state.bus.publish(Event::AgentRevoked {
            agent_id: id,
            token_hash: None,
        });
    }
    if b.status.is_some() {
        state.bus.publish(Event::Presence {
            agent_id: id,
            status: agent.status,
        });
    }
    state.assign.notify_one();
    Ok(web::Json(agent))
}
