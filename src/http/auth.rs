//! `/api/auth/*` and `/api/me`: login, logout, own profile and presence.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{hash_token, new_token, AuthAgent};
use crate::actors::cache::CacheKey;
use crate::bus::Event;
use crate::error::{AppError, AppResult};
use crate::protocol::{Agent, AgentStatus};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

pub async fn login(
    state: web::Data<AppState>,
    body: web::Json<LoginBody>,
) -> AppResult<HttpResponse> {
    let LoginBody { email, password } = body.into_inner();
    let window = chrono::Duration::seconds(state.settings.login_window_secs as i64);
    let max = state.settings.login_max_failures;
    let found = state
        .db
        .run(async |conn| {
            let failures = crate::db::agents::recent_failures(conn, &email, window).await?;
            if failures >= max {
                return Ok(None);
            }
            Ok(Some(crate::db::agents::by_email(conn, &email).await?))
        })
        .await?;
    let Some(found) = found else {
        state.metrics.logins.with_label_values(&["throttled"]).inc();
        state
            .metrics
            .rate_limited
            .with_label_values(&["login"])
            .inc();
        return Err(AppError::rate_limited(
            "too many failed logins for this account; try again later",
        ));
    };
    let (agent, phc) = match found {
        Some((a, h)) if !a.disabled => (Some(a), h),
        _ => (None, crate::password::dummy_hash().to_string()),
    };
    let ok = web::block(move || crate::password::verify(&password, &phc))
        .await
        .map_err(AppError::internal)?;
    let agent = match (agent, ok) {
        (Some(a), true) => a,
        _ => {
            state.metrics.logins.with_label_values(&["failed"]).inc();
            state
                .db
                .run(async |conn| crate::db::agents::record_failure(conn, &email).await)
                .await?;
            return Err(AppError::unauthorized("wrong email or password"));
        }
    };
    let token = new_token();
    let hash = hash_token(&token);
    let agent_id = agent.id;
    state
        .db
        .run(async |conn| {
            crate::db::agents::create_session(conn, agent_id, &hash).await?;
            crate::db::agents::clear_failures(conn, &email).await
        })
        .await?;
    state.metrics.logins.with_label_values(&["ok"]).inc();
    log::info!("agent {} logged in", agent.id);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "token": token, "agent": agent })))
}

pub async fn logout(state: web::Data<AppState>, auth: AuthAgent) -> AppResult<HttpResponse> {
    let hash = auth.token_hash.clone();
    state
        .db
        .run(async |conn| crate::db::agents::delete_session(conn, &hash).await)
        .await?;
    let hex_hash = hex::encode(&auth.token_hash);
    state
        .cache
        .invalidate(CacheKey::Token(hex_hash.clone()))
        .await;
    // Close the sockets opened with this token, on every node.
    state.bus.publish(Event::AgentRevoked {
        agent_id: auth.agent.id,
        token_hash: Some(hex_hash),
    });
    Ok(HttpResponse::NoContent().finish())
}

pub async fn me(auth: AuthAgent) -> AppResult<web::Json<Agent>> {
    Ok(web::Json((*auth.agent).clone()))
}

#[derive(Deserialize)]
pub struct StatusBody {
    status: String,
}

pub async fn set_status(
    state: web::Data<AppState>,
    auth: AuthAgent,
    body: web::Json<StatusBody>,
) -> AppResult<web::Json<Agent>> {
    let status = AgentStatus::parse(&body.status)
        .ok_or_else(|| AppError::bad_request("status must be online, away or offline"))?;
    let id = auth.agent.id;
    let agent = state
        .db
        .run(async |conn| crate::db::agents::set_status(conn, id, status).await)
        .await?;
    state.cache.invalidate(CacheKey::AllTokens).await;
    state.cache.forget_agents_online();
    state.bus.publish(Event::Presence {
        agent_id: id,
        status,
    });
    if status == AgentStatus::Online {
        state.assign.notify_one();
    }
    Ok(web::Json(agent))
}
