//! Queries on `webhooks` and `webhook_deliveries`: admin CRUD, the durable delivery queue
//! the worker fills from the event stream and drains with retries, and the delivery log.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Int4, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::AppResult;

/// Event types a webhook may subscribe to.
pub const EVENT_TYPES: [&str; 4] = [
    super::events::CONVERSATION_CREATED,
    super::events::CONVERSATION_UPDATED,
    super::events::CONVERSATION_RESOLVED,
    super::events::MESSAGE_CREATED,
];

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Webhook {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub site_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Array<Text>)]
    pub events: Vec<String>,
    #[diesel(sql_type = Bool)]
    pub include_private: bool,
    #[diesel(sql_type = Bool)]
    pub active: bool,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, site_id, url, secret, events, include_private, active, created_at, updated_at";

pub async fn list(conn: &mut AsyncPgConnection, site_id: Uuid) -> AppResult<Vec<Webhook>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE site_id = $1 ORDER BY created_at, id"
    ))
    .bind::<diesel::sql_types::Uuid, _>(site_id)
    .load(conn)
    .await?)
}

pub async fn get(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    id: Uuid,
) -> AppResult<Option<Webhook>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE site_id = $1 AND id = $2"
    ))
    .bind::<diesel::sql_types::Uuid, _>(site_id)
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result(conn)
    .await
    .optional()?)
}

/// A webhook's settings as an admin writes them (already validated).
#[derive(Debug, Clone)]
pub struct WebhookFields {
    pub url: String,
    pub events: Vec<String>,
    pub include_private: bool,
    pub active: bool,
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    fields: &WebhookFields,
    secret: &str,
) -> AppResult<Webhook> {
    Ok(diesel::sql_query(format!(
        "INSERT INTO webhooks (id, site_id, url, secret, events, include_private, active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind::<diesel::sql_types::Uuid, _>(Uuid::new_v4())
    .bind::<diesel::sql_types::Uuid, _>(site_id)
    .bind::<Text, _>(&fields.url)
    .bind::<Text, _>(secret)
    .bind::<Array<Text>, _>(&fields.events)
    .bind::<Bool, _>(fields.include_private)
    .bind::<Bool, _>(fields.active)
    .get_result(conn)
    .await?)
}

/// Replaces the settings (and the secret when `secret` is given).
pub async fn update(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    id: Uuid,
    fields: &WebhookFields,
    secret: Option<&str>,
) -> AppResult<Option<Webhook>> {
    Ok(diesel::sql_query(format!(
        "UPDATE webhooks SET url = $3, events = $4, include_private = $5, active = $6, \
           secret = coalesce($7, secret), updated_at = now() \
         WHERE site_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind::<diesel::sql_types::Uuid, _>(site_id)
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(&fields.url)
    .bind::<Array<Text>, _>(&fields.events)
    .bind::<Bool, _>(fields.include_private)
    .bind::<Bool, _>(fields.active)
    .bind::<Nullable<Text>, _>(secret)
    .get_result(conn)
    .await
    .optional()?)
}

pub async fn delete(conn: &mut AsyncPgConnection, site_id: Uuid, id: Uuid) -> AppResult<bool> {
    let n = diesel::sql_query("DELETE FROM webhooks WHERE site_id = $1 AND id = $2")
        .bind::<diesel::sql_types::Uuid, _>(site_id)
        .bind::<diesel::sql_types::Uuid, _>(id)
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Active webhooks of any of `sites`.
pub async fn active_for_sites(
    conn: &mut AsyncPgConnection,
    sites: &[Uuid],
) -> AppResult<Vec<Webhook>> {
    Ok(diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhooks WHERE active AND site_id = ANY($1)"
    ))
    .bind::<Array<diesel::sql_types::Uuid>, _>(sites)
    .load(conn)
    .await?)
}

/// A delivery to queue: one event for one webhook.
pub struct NewDelivery {
    pub webhook_id: Uuid,
    pub event_id: i64,
    pub event_type: String,
    pub body: String,
}

/// Queues deliveries (an event already queued for a webhook is not queued twice).
pub async fn enqueue(conn: &mut AsyncPgConnection, items: &[NewDelivery]) -> AppResult<usize> {
    if items.is_empty() {
        return Ok(0);
    }
    let hooks: Vec<Uuid> = items.iter().map(|d| d.webhook_id).collect();
    let events: Vec<i64> = items.iter().map(|d| d.event_id).collect();
    let types: Vec<&str> = items.iter().map(|d| d.event_type.as_str()).collect();
    let bodies: Vec<&str> = items.iter().map(|d| d.body.as_str()).collect();
    Ok(diesel::sql_query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body) \
         SELECT * FROM unnest($1, $2, $3, $4) \
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(&hooks)
    .bind::<Array<BigInt>, _>(&events)
    .bind::<Array<Text>, _>(&types)
    .bind::<Array<Text>, _>(&bodies)
    .execute(conn)
    .await?)
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub event_id: i64,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub body: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
}

/// Claims up to `limit` due deliveries for `hold_secs` (several workers never take the same
/// one; a worker that dies holding one lets it go when the hold expires).
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    hold_secs: f64,
) -> AppResult<Vec<Claimed>> {
    Ok(diesel::sql_query(
        "UPDATE webhook_deliveries d \
         SET locked_until = now() + make_interval(secs => $2), attempts = d.attempts + 1, \
             last_attempt_at = now() \
         FROM webhooks w \
         WHERE w.id = d.webhook_id AND d.id IN ( \
           SELECT id FROM webhook_deliveries \
           WHERE status = 'pending' AND next_attempt_at <= now() \
             AND (locked_until IS NULL OR locked_until < now()) \
           ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING d.id, d.event_id, d.event_type, d.body, d.attempts, w.url, w.secret",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(hold_secs)
    .load(conn)
    .await?)
}

/// Records a successful attempt.
pub async fn delivered(conn: &mut AsyncPgConnection, id: i64, status: i32) -> AppResult<()> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), \
           locked_until = NULL, last_status = $2, last_error = NULL WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Int4, _>(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in_secs`, or given up when `None`.
pub async fn attempt_failed(
    conn: &mut AsyncPgConnection,
    id: i64,
    status: Option<i32>,
    error: &str,
    retry_in_secs: Option<f64>,
) -> AppResult<()> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET \
           status = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END, \
           next_attempt_at = now() + make_interval(secs => coalesce($4, 0)), \
           locked_until = NULL, last_status = $2, last_error = $3 WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Int4>, _>(status)
    .bind::<Text, _>(error)
    .bind::<Nullable<Double>, _>(retry_in_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// One line of the delivery log.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Delivery {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub event_id: i64,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Int4>)]
    pub last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The newest deliveries of a webhook first; `before` pages back by id.
pub async fn log(
    conn: &mut AsyncPgConnection,
    webhook_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> AppResult<Vec<Delivery>> {
    Ok(diesel::sql_query(
        "SELECT id, event_id, event_type, status, attempts, last_status, last_error, \
           last_attempt_at, next_attempt_at, created_at, delivered_at \
         FROM webhook_deliveries WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind::<diesel::sql_types::Uuid, _>(webhook_id)
    .bind::<BigInt, _>(before.unwrap_or(i64::MAX))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}
