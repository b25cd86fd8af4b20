//! `/api/visitors/*`: the visitors online now, and greeting one first.
//!
//! - `GET /api/visitors/online?limit=` answers `{"items":[…],"next_cursor":null}`: every
//!   visitor connected to any node now (most recent arrivals first), with site, page,
//!   referrer, `visit_started_at` (time on site) and the visitor's latest `conversation`.
//! - `POST /api/visitors/{id}/greet {body, client_msg_id?}` starts a conversation with an
//!   online visitor who is in none: created assigned to the greeting agent (or the
//!   visitor's resolved one reopened), the greeting stored as the agent's first message
//!   and delivered live to the visitor's widget. 201 `{conversation, message}`; `conflict`
//!   when the visitor is offline or already in a pending or open conversation.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{parse_id, AuthAgent};
use crate::actors::room::Post;
use crate::actors::session::room_for;
use crate::bus::Event;
use crate::db::writer::NewMessage;
use crate::domain::limits;
use crate::error::{AppError, AppResult};
use crate::protocol::SenderType;
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub struct OnlineQuery {
    limit: Option<i64>,
}

pub async fn online(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    q: web::Query<OnlineQuery>,
) -> AppResult<HttpResponse> {
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => {
            return Err(AppError::bad_request(format!(
                "limit must be 1 to {MAX_LIMIT}"
            )))
        }
    };
    let items = crate::presence::list_with_conversations(&state, limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": null })))
}

#[derive(Deserialize)]
pub struct GreetBody {
    body: String,
    client_msg_id: Option<String>,
}

pub async fn greet(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<GreetBody>,
) -> AppResult<HttpResponse> {
    let visitor_id = parse_id(&path, "visitor")?;
    let GreetBody {
        body,
        client_msg_id,
    } = body.into_inner();
    if let Some(c) = &client_msg_id {
        limits::validate_client_msg_id(c)?;
    }
    let body = limits::validate_body(&body)?;
    let agent_id = auth.agent.id;
    if !crate::presence::is_online(&state, visitor_id).await {
        // Unknown ids answer not_found; known but gone, conflict.
        let known = state
            .db
            .run(async |conn| crate::db::visitors::get(conn, visitor_id).await)
            .await?;
        return Err(match known {
            None => AppError::not_found("visitor"),
            Some(_) => AppError::conflict("the visitor is not online any more"),
        });
    }
    let (conversation, created) = state
        .db
        .run(async |conn| {
            crate::db::conversations::open_for_greeting(conn, visitor_id, agent_id).await
        })
        .await?;
    // Agents see the conversation; the visitor's sessions take it up (and join its room)
    // before the greeting is committed, or read it with the history they load.
    state.bus.publish(if created {
        Event::ConversationCreated {
            conversation: conversation.clone(),
        }
    } else {
        Event::ConversationUpdated {
            conversation: conversation.clone(),
        }
    });
    let room = room_for(&state, conversation.id, None).await?;
    let outcome = room
        .send(Post(NewMessage {
            conversation_id: conversation.id,
            sender_type: SenderType::Agent,
            sender_id: Some(agent_id),
            private: false,
            body,
            client_msg_id,
            attachments: Vec::new(),
            origin: None,
        }))
        .await??;
    // Read again: the greeting set the first response time.
    let id = conversation.id;
    let conversation = state
        .db
        .run(async |conn| crate::db::conversations::get(conn, id).await)
        .await
        .ok()
        .flatten()
        .unwrap_or(conversation);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "conversation": conversation,
        "message": outcome.message(),
    })))
}
