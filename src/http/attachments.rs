//! Attachments (issue 9): uploads by agents and visitors, downloads by the conversation's
//! participants only.
//!
//! - `POST /api/conversations/{id}/attachments?name=NAME` (agent, bearer token) and
//!   `POST /api/visitor/attachments?site=KEY&token=T&name=NAME` (visitor) take the file as
//!   the raw request body (any `Content-Type`: the type is sniffed from the bytes, see
//!   [`crate::domain::attachments`]) and answer 201 `{id, name, content_type, size, url}`.
//!   Larger than `KEFU_ATTACHMENT_MAX_BYTES`: 413 `too_large`; a type kefu does not accept:
//!   400 `bad_request`. The id then goes in a message's `attachments` list.
//! - `GET /api/attachments/{id}` answers the bytes to any agent (bearer token) and to the
//!   visitor of the conversation (`?site=KEY&token=T`) — its own uploads and what agents
//!   sent it in messages that were not private notes. Anyone else gets 404, whether the
//!   file exists or not. Images (PNG, JPEG, GIF, WebP) are served inline; everything else
//!   as `Content-Disposition: attachment`; always with `X-Content-Type-Options: nosniff`
//!   and `Content-Security-Policy: default-src 'none'; sandbox`, so nothing uploaded ever
//!   runs as a page or a script on kefu's origin.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use chrono::Utc;
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::poll::{site_for, visitor_for, with_cors};
use super::{parse_id, AuthAgent};
use crate::db::attachments::AttachmentRow;
use crate::domain::attachments::{ascii_name, inline_type, safe_name, served_type, sniff};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
    site: Option<String>,
    token: Option<String>,
}

/// The request body, refused with 413 as soon as it passes `max` bytes (before reading it
/// when `Content-Length` says so).
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: u64,
) -> AppResult<bytes::Bytes> {
    let too_large =
        || AppError::too_large(format!("the file is larger than the limit of {max} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_request(format!("upload interrupted: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.is_empty() {
        return Err(AppError::bad_request("the file is empty"));
    }
    Ok(buf.freeze())
}

/// Who uploads, and for which visitor's conversation.
struct Owner {
    site_id: Uuid,
    visitor_id: Uuid,
    conversation_id: Option<Uuid>,
    uploader_type: &'static str,
    uploader_id: Uuid,
}

/// Sniffs, stores the bytes, then records the row (a row never points at missing bytes).
async fn store(
    state: &AppState,
    owner: Owner,
    name: Option<&str>,
    bytes: bytes::Bytes,
) -> AppResult<AttachmentRow> {
    let sniffed = sniff(&bytes).ok_or_else(|| {
        AppError::bad_request(
            "this type of file is not accepted (images, PDF, office documents, archives, \
             audio, video and plain text are)",
        )
    })?;
    let id = Uuid::new_v4();
    let hex = id.simple().to_string();
    let key = format!("{}/{}/{hex}", &hex[..2], &hex[2..4]);
    let size = bytes.len() as i64;
    state.storage.put(&key, bytes).await?;
    let row = AttachmentRow {
        id,
        site_id: owner.site_id,
        visitor_id: owner.visitor_id,
        conversation_id: owner.conversation_id,
        uploader_type: owner.uploader_type.to_string(),
        uploader_id: owner.uploader_id,
        name: safe_name(name.unwrap_or("")),
        content_type: sniffed.content_type.to_string(),
        size,
        storage_key: key.clone(),
        message_id: None,
        private: false,
        created_at: Utc::now(),
    };
    let saved = state
        .db
        .run(async |conn| crate::db::attachments::insert(conn, &row).await)
        .await;
    if let Err(e) = saved {
        let _ = state.storage.delete(&key).await;
        return Err(e);
    }
    Ok(row)
}

/// `POST /api/conversations/{id}/attachments?name=NAME`: an agent's upload for a reply.
pub async fn agent_upload(
    state: web::Data<AppState>,
    auth: AuthAgent,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<UploadQuery>,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "conversation")?;
    let conv = state
        .cache
        .conversation_meta(id)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    let bytes = read_limited(&req, payload, state.settings.attachment_max_bytes).await?;
    let owner = Owner {
        site_id: conv.site_id,
        visitor_id: conv.visitor_id,
        conversation_id: Some(conv.id),
        uploader_type: "agent",
        uploader_id: auth.agent.id,
    };
    let row = store(&state, owner, q.name.as_deref(), bytes).await?;
    Ok(HttpResponse::Created().json(row.to_ref()))
}

/// `POST /api/visitor/attachments?site=KEY&token=T&name=NAME`: a visitor's upload (a
/// CORS-simple request when sent as `text/plain`, like the polling transport's).
pub async fn visitor_upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<UploadQuery>,
    payload: web::Payload,
) -> AppResult<HttpResponse> {
    let site = site_for(&state, &req, q.site.as_deref()).await?;
    let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
    let bytes = read_limited(&req, payload, state.settings.attachment_max_bytes).await?;
    let owner = Owner {
        site_id: site.id,
        visitor_id: visitor.id,
        conversation_id: None,
        uploader_type: "visitor",
        uploader_id: visitor.id,
    };
    let row = store(&state, owner, q.name.as_deref(), bytes).await?;
    Ok(with_cors(
        &req,
        &site,
        HttpResponse::Created().json(row.to_ref()),
    ))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    site: Option<String>,
    token: Option<String>,
}

/// `GET /api/attachments/{id}`: the file, to an agent (bearer) or the conversation's
/// visitor (`site` and `token` in the query).
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> AppResult<HttpResponse> {
    let id = parse_id(&path, "attachment")?;
    let row = state
        .db
        .run(async |conn| crate::db::attachments::get(conn, id).await)
        .await?;
    let has_bearer = req.headers().contains_key(header::AUTHORIZATION);
    let site = if has_bearer {
        // Any agent may read any conversation (SPEC §4), hence its files.
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .ok_or_else(|| AppError::unauthorized("missing Authorization: Bearer token"))?;
        super::authenticate(&state, &token).await?;
        None
    } else if q.token.is_some() {
        let site = site_for(&state, &req, q.site.as_deref()).await?;
        let visitor = visitor_for(&state, &site, q.token.as_deref()).await?;
        // Another visitor's file, or an agent's not sent to this one: as if it did not
        // exist (the id alone must not reveal anything).
        if !row
            .as_ref()
            .is_some_and(|r| r.site_id == site.id && r.visible_to_visitor(visitor.id))
        {
            return Err(AppError::not_found("attachment"));
        }
        Some(site)
    } else {
        return Err(AppError::unauthorized(
            "an agent's bearer token or the visitor's site and token are required",
        ));
    };
    let row = row.ok_or_else(|| AppError::not_found("attachment"))?;
    let bytes = state.storage.get(&row.storage_key).await?;
    let res = file_response(&row, bytes);
    Ok(match site {
        Some(site) => with_cors(&req, &site, res),
        None => res,
    })
}

/// The bytes with the headers that keep them inert: the stored (sniffed) type when it is
/// one kefu serves, `nosniff`, a sandboxing CSP, and a disposition.
fn file_response(row: &AttachmentRow, bytes: bytes::Bytes) -> HttpResponse {
    let inline = inline_type(&row.content_type);
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        ascii_name(&row.name),
        percent_encode(&row.name)
    );
    let mut res = HttpResponse::Ok()
        .content_type(served_type(&row.content_type))
        .body(bytes);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    } else {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    res
}

/// RFC 5987 `value-chars` encoding of a file name.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(
            super::percent_encode("发票 1.pdf"),
            "%E5%8F%91%E7%A5%A8%201.pdf"
        );
        assert_eq!(super::percent_encode("a\"b"), "a%22b");
    }
}
