//! `/api/conversations/*` and `/api/stats`: the agent inbox, history, replies and
//! lifecycle changes.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::{parse_id, AuthAgent};
use crate::actors::room::Post;
use crate::actors::session::room_for;
use crate::bus::Event;
use crate::db::conversations::{AssigneeFilter, Cursor};
use crate::db::writer::{NewMessage, WriteOutcome};
use crate::domain::limits;
use crate::error::{AppError, AppResult};
use crate::protocol::{Conversation, ConversationStatus, SenderType};
use crate::state::{AppState, AVAILABLE_WINDOW_SECS};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    assignee: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    /// A label id: only conversations carrying it.
    label: Option<String>,
}

pub async fn list(
    state: web::Data<AppState>,
    auth: AuthAgent,
    q: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(
            ConversationStatus::parse(s)
                .ok_or_else(|| AppError::bad_request("status must be pending, open or resolved"))?,
        ),
    };
    let assignee = match q.assignee.as_deref() {
        None | Some("") | Some("any") => AssigneeFilter::Any,
        Some("me") => AssigneeFilter::Agent(auth.agent.id),
        Some("unassigned") => AssigneeFilter::Unassigned,
        Some(other) => AssigneeFilter::Agent(Uuid::parse_str(other).map_err(|_| {
            AppError::bad_request("assignee must be me, unassigned, any or an agent id")
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| AppError::bad_request("invalid cursor"))?),
    };
    let label = match q.label.as_deref() {
        None | Some("") => None,
        Some(l) => Some(
            Uuid::parse_str(l).map_err(|_| AppError::bad_request("label must be a label id"))?,
        ),
    };
    let (items, next) = state
        .db
        .run(async |conn| {
            let (mut items, next) =
                crate::db::conversations::list(conn, status, assignee, label, limit, cursor)
                    .await?;
            crate::db::labels::attach(conn, &mut items).await?;
            Ok::<_, AppError>((items, next))
        })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "items": items,
        "next_cursor": next.map(|c| c.encode()),
    })))
}

pub async fn get(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    let conv = state
        .db
        .run(async |conn| {
            let mut convs: Vec<Conversation> = crate::db::conversations::get(conn, id)
                .await?
                .into_iter()
                .collect();
            crate::db::labels::attach(conn, &mut convs).await?;
            Ok::<_, AppError>(convs.pop())
        })
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    let visitor = state.cache.visitor(conv.visitor_id).await?;
    let mut value = serde_json::to_value(&conv).map_err(AppError::internal)?;
    value["visitor"] = serde_json::to_value(visitor.as_deref()).map_err(AppError::internal)?;
    Ok(HttpResponse::Ok().json(value))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<i64>,
}

pub async fn messages(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
    q: web::Query<HistoryQuery>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    let limit = q.limit.unwrap_or(crate::db::messages::MAX_PAGE);
    if !(1..=crate::db::messages::MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request("limit must be 1 to 200"));
    }
    let (after, before) = (q.after_seq, q.before_seq);
    if after.is_some_and(|a| a < 0) {
        return Err(AppError::bad_request("after_seq must be ≥ 0"));
    }
    let (items, more) = match before {
        Some(b) => {
            ensure_exists(&state, id).await?;
            state
                .db
                .run(async |conn| crate::db::messages::before(conn, id, b, limit).await)
                .await?
        }
        None => {
            // Usually answered from the cached newest page.
            let (mut items, mut more) = state
                .cache
                .history_after(id, after.unwrap_or(0), true)
                .await?;
            if items.len() as i64 > limit {
                items.truncate(limit as usize);
                more = true;
            }
            (items, more)
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "more": more })))
}

#[derive(Deserialize)]
pub struct PostBody {
    client_msg_id: Option<String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    private: bool,
    /// Ids of files uploaded with `POST /api/conversations/{id}/attachments`.
    #[serde(default)]
    attachments: Vec<Uuid>,
}

pub async fn post_message(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<PostBody>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    let PostBody {
        client_msg_id,
        body,
        private,
        attachments,
    } = body.into_inner();
    if let Some(c) = &client_msg_id {
        limits::validate_client_msg_id(c)?;
    }
    let body = limits::validate_body_with_attachments(&body, attachments.len())?;
    ensure_exists(&state, id).await?;
    let room = room_for(&state, id, None).await?;
    let outcome = room
        .send(Post(NewMessage {
            conversation_id: id,
            sender_type: SenderType::Agent,
            sender_id: Some(auth.agent.id),
            private,
            body,
            client_msg_id,
            attachments,
            origin: None,
        }))
        .await??;
    Ok(match outcome {
        WriteOutcome::Created(m) => HttpResponse::Created().json(m),
        WriteOutcome::Duplicate(m) => HttpResponse::Ok().json(m),
    })
}

/// `{}` claims; `{"agent_id": "…"}` transfers; `{"agent_id": null}` unassigns.
#[derive(Deserialize)]
pub struct AssignBody {
    #[serde(default, deserialize_with = "present")]
    agent_id: Option<Option<Uuid>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

fn publish_updated(state: &AppState, conv: &Conversation) {
    state.bus.publish(Event::ConversationUpdated {
        conversation: conv.clone(),
    });
}

pub async fn assign(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Bytes,
) -> AppResult<web::Json<Conversation>> {
    let id = parse_id(&path, "conversation")?;
    // No body claims, like `{}`; a body that does not parse is an error, never a claim.
    let requested = if body.trim_ascii().is_empty() {
        None
    } else {
        serde_json::from_slice::<AssignBody>(&body)
            .map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))?
            .agent_id
    };
    let target = match requested {
        None => Some(auth.agent.id),
        Some(t) => t,
    };
    let conv = state
        .db
        .run(async |conn| {
            if let Some(agent_id) = target {
                match crate::db::agents::get(conn, agent_id).await? {
                    Some(a) if !a.disabled => {}
                    Some(_) => return Err(AppError::conflict("that agent is disabled")),
                    None => return Err(AppError::not_found("agent")),
                }
            }
            crate::db::conversations::set_assignee(conn, id, target)
                .await?
                .ok_or_else(|| AppError::not_found("conversation"))
        })
        .await?;
    publish_updated(&state, &conv);
    // The previous assignee may have capacity now, or the conversation is back in line.
    state.assign.notify_one();
    Ok(web::Json(conv))
}

pub async fn resolve(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<web::Json<Conversation>> {
    let id = parse_id(&path, "conversation")?;
    let conv = state
        .db
        .run(async |conn| crate::db::conversations::resolve(conn, id).await)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    publish_updated(&state, &conv);
    state.assign.notify_one();
    Ok(web::Json(conv))
}

pub async fn reopen(
    state: web::Data<AppState>,
    _auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<web::Json<Conversation>> {
    let id = parse_id(&path, "conversation")?;
    let conv = state
        .db
        .run(async |conn| crate::db::conversations::reopen(conn, id).await)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    publish_updated(&state, &conv);
    if conv.status == ConversationStatus::Pending {
        state.assign.notify_one();
    }
    Ok(web::Json(conv))
}

#[derive(Deserialize)]
pub struct TypingBody {
    on: bool,
}

pub async fn typing(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<TypingBody>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    ensure_exists(&state, id).await?;
    state.bus.publish(Event::Typing {
        conversation_id: id,
        sender_type: SenderType::Agent,
        sender_id: Some(auth.agent.id),
        on: body.on,
    });
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct ReadBody {
    up_to_seq: i64,
}

pub async fn read(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
    body: web::Json<ReadBody>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    if body.up_to_seq < 0 {
        return Err(AppError::bad_request("up_to_seq must be ≥ 0"));
    }
    ensure_exists(&state, id).await?;
    state.bus.publish(Event::Read {
        conversation_id: id,
        sender_type: SenderType::Agent,
        sender_id: Some(auth.agent.id),
        up_to_seq: body.up_to_seq,
    });
    Ok(HttpResponse::NoContent().finish())
}

async fn ensure_exists(state: &AppState, id: Uuid) -> AppResult<()> {
    state
        .cache
        .conversation_meta(id)
        .await?
        .map(|_| ())
        .ok_or_else(|| AppError::not_found("conversation"))
}

pub async fn stats(state: web::Data<AppState>, _auth: AuthAgent) -> AppResult<HttpResponse> {
    let s = state
        .db
        .run(async |conn| crate::db::conversations::stats(conn, AVAILABLE_WINDOW_SECS).await)
        .await?;
    Ok(HttpResponse::Ok().json(s))
}
