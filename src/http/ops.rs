//! `/healthz`, `/readyz`, `/metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::metrics::Render;
use crate::error::AppResult;
use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when PostgreSQL (and Redis, when configured) answer; 503 naming what is down.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let postgres = match state.db.ping().await {
        Ok(()) => "ok",
        Err(_) => "down",
    };
    let redis = match &state.redis {
        None => "disabled",
        Some(redis) => {
            if redis.ping().await {
                "ok"
            } else {
                "down"
            }
        }
    };
    let body = json!({ "postgres": postgres, "redis": redis, "node": state.node_id });
    if postgres == "ok" && redis != "down" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let text = state.metrics_actor.send(Render).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
