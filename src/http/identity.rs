//! Identity verification and visitor resolution.
//!
//! Admin routes: `POST /api/sites/{id}/identity_secret` generates (or rotates) a site's
//! secret and answers it once; `DELETE` turns verification off. Afterwards the API only
//! says `identity_verification: true` and shows the secret's last characters.
//!
//! [`resolve_visitor`] is what the socket handshake and the long-polling session share:
//! who is this visitor? Without `user_id` (or on a site without a secret) it is the
//! anonymous rule — the visitor behind the presented token, or a new one. With a
//! `user_id` on a site with a secret, `user_hash` must be `hex(HMAC-SHA256(secret,
//! user_id))` or the connection is refused (`unauthorized`); a verified user is one visitor
//! per site whatever device it connects from: each device gets a token of its own that
//! leads to the same visitor, so every device sees the same conversation and history.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{hash_token, new_token, parse_id, AuthAgent};
use crate::actors::cache::CacheKey;
use crate::domain::identity;
use crate::error::{AppError, AppResult};
use crate::protocol::{Conversation, Site, Visitor};
use crate::state::AppState;

#[derive(Serialize)]
struct SecretCreated<'a> {
    /// Shown once: store it on the host's server, never in a page.
    identity_secret: &'a str,
    site: &'a Site,
}

/// `POST /api/sites/{id}/identity_secret` (admin): a new secret, replacing any old one.
pub async fn create_secret(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    auth.require_admin()?;
    let id = parse_id(&path, "site")?;
    let secret = identity::new_secret();
    let stored = secret.clone();
    let site = state
        .db
        .run(async |conn| crate::db::sites::set_identity_secret(conn, id, Some(stored)).await)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    state
        .cache
        .invalidate(CacheKey::Site(site.widget_key.clone()))
        .await;
    Ok(HttpResponse::Created().json(SecretCreated {
        identity_secret: &secret,
        site: &site,
    }))
}

/// `DELETE /api/sites/{id}/identity_secret` (admin): identity verification off.
pub async fn delete_secret(
    state: web::Data<AppState>,
    auth: AuthAgent,
    path: web::Path<String>,
) -> AppResult<web::Json<Site>> {
    auth.require_admin()?;
    let id = parse_id(&path, "site")?;
    let site = state
        .db
        .run(async |conn| crate::db::sites::set_identity_secret(conn, id, None).await)
        .await?
        .ok_or_else(|| AppError::not_found("site"))?;
    state
        .cache
        .invalidate(CacheKey::Site(site.widget_key.clone()))
        .await;
    Ok(web::Json(site))
}

/// What a connecting widget presents.
pub struct Presented<'a> {
    pub token: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub user_hash: Option<&'a str>,
}

/// The visitor of a connecting widget, its token and its current conversation.
pub async fn resolve_visitor(
    state: &AppState,
    site: &Site,
    presented: Presented<'_>,
) -> AppResult<(Visitor, String, Option<Conversation>)> {
    let token = presented.token.filter(|t| !t.is_empty() && t.len() <= 128);
    let user_id = presented.user_id.filter(|u| !u.is_empty());
    let site_id = site.id;
    // A user_id counts only on a site that verifies it; elsewhere it is ignored, exactly
    // as before identity verification existed.
    let verified = match user_id {
        Some(uid) if site.identity_verification => {
            let uid = identity::validate_user_id(uid)?;
            let secret = state
                .db
                .run(async |conn| crate::db::sites::identity_secret(conn, site_id).await)
                .await?;
            match secret {
                Some(secret) => {
                    let ok = presented
                        .user_hash
                        .is_some_and(|h| identity::verify(&secret, uid, h));
                    if !ok {
                        return Err(AppError::unauthorized(
                            "identity verification failed: user_hash must be the hex HMAC-SHA256 of user_id with the site's identity secret",
                        ));
                    }
                    Some(uid.to_string())
                }
                // Turned off since the site was cached.
                None => None,
            }
        }
        _ => None,
    };
    state
        .db
        .run(async |conn| {
            let existing = match token {
                Some(t) => crate::db::visitors::by_token(conn, site_id, &hash_token(t)).await?,
                None => None,
            };
            let (visitor, token) = match verified.as_deref() {
                None => match (existing, token) {
                    (Some(v), Some(t)) => (v, t.to_string()),
                    _ => {
                        let token = new_token();
                        let v =
                            crate::db::visitors::create(conn, site_id, &hash_token(&token)).await?;
                        (v, token)
                    }
                },
                Some(uid) => verified_visitor(conn, site_id, uid, existing, token).await?,
            };
            let conv = crate::db::conversations::latest_for_visitor(conn, visitor.id).await?;
            Ok((visitor, token, conv))
        })
        .await
}

/// The visitor of a verified user, for a device that presented `token` (its visitor
/// `existing`, if the token was known).
async fn verified_visitor(
    conn: &mut diesel_async::AsyncPgConnection,
    site_id: uuid::Uuid,
    uid: &str,
    existing: Option<Visitor>,
    token: Option<&str>,
) -> AppResult<(Visitor, String)> {
    // This device already is the user's visitor.
    if let (Some(v), Some(t)) = (&existing, token) {
        if v.user_id.as_deref() == Some(uid) {
            return Ok((v.clone(), t.to_string()));
        }
    }
    // An anonymous visitor signing in keeps its conversation, if the user has no visitor.
    if let (Some(v), Some(t)) = (&existing, token) {
        if v.user_id.is_none() {
            if let Some(claimed) = crate::db::visitors::claim_for_user(conn, v.id, uid).await? {
                return Ok((claimed, t.to_string()));
            }
        }
    }
    let fresh = new_token();
    let hash = hash_token(&fresh);
    for _ in 0..2 {
        if let Some(v) = crate::db::visitors::by_user(conn, site_id, uid).await? {
            crate::db::visitors::add_token(conn, v.id, &hash).await?;
            return Ok((v, fresh));
        }
        if let Some(v) = crate::db::visitors::create_for_user(conn, site_id, &hash, uid).await? {
            return Ok((v, fresh));
        }
        // Another device created the user's visitor just now: use it.
    }
    Err(AppError::conflict(
        "this user is being signed in elsewhere; try again",
    ))
}
