//! The durable event stream (ARCHITECTURE.md, "side effects from a durable stream").
//!
//! Every change that side effects care about — a stored message, a conversation created,
//! assigned, resolved — writes a row into `events` in the same transaction as the change:
//! a rolled-back change leaves no event, a committed one always has its event. Consumers
//! (the [`crate::worker`], out-of-process bots through `GET /api/events`) read the stream
//! in id order after a cursor.
//!
//! Reading is gap-free: [`read_after`] returns only rows whose writing transaction is older
//! than every transaction still running (`txid < pg_snapshot_xmin(pg_current_snapshot())`),
//! and ids sort by writing transaction first (migrations/2026-12-04-000500_events), so a
//! row committed later always has a larger id than anything already returned.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::protocol::{Conversation, Message};

/// Event kinds (the `type` consumers see).
pub const MESSAGE_CREATED: &str = "message.created";
pub const CONVERSATION_CREATED: &str = "conversation.created";
pub const CONVERSATION_UPDATED: &str = "conversation.updated";
pub const CONVERSATION_RESOLVED: &str = "conversation.resolved";

/// An event to write with a change.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub site_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn message_created(site_id: Uuid, message: &Message) -> NewEvent {
        NewEvent {
            kind: MESSAGE_CREATED,
            site_id,
            conversation_id: Some(message.conversation_id),
            payload: serde_json::to_value(message).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn conversation(kind: &'static str, conversation: &Conversation) -> NewEvent {
        NewEvent {
            kind,
            site_id: conversation.site_id,
            conversation_id: Some(conversation.id),
            payload: serde_json::to_value(conversation).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Writes `events` in one statement, inside the caller's transaction.
pub async fn insert(conn: &mut AsyncPgConnection, events: &[NewEvent]) -> AppResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let sites: Vec<Uuid> = events.iter().map(|e| e.site_id).collect();
    let convs: Vec<Option<Uuid>> = events.iter().map(|e| e.conversation_id).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| &e.payload).collect();
    // `WITH ORDINALITY … ORDER BY` keeps the ids in the order given (a batch's messages).
    diesel::sql_query(
        "INSERT INTO events (kind, site_id, conversation_id, payload) \
         SELECT kind, site_id, conversation_id, payload \
         FROM unnest($1, $2, $3, $4) WITH ORDINALITY AS e(kind, site_id, conversation_id, payload, n) \
         ORDER BY n",
    )
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<diesel::sql_types::Uuid>, _>(&sites)
    .bind::<Array<Nullable<diesel::sql_types::Uuid>>, _>(&convs)
    .bind::<Array<Jsonb>, _>(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// One event as consumers see it.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct StoredEvent {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    #[serde(rename = "type")]
    pub kind: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub site_id: Uuid,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub conversation_id: Option<Uuid>,
    #[diesel(sql_type = Jsonb)]
    #[serde(rename = "data")]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Largest page a reader gets.
pub const MAX_PAGE: i64 = 1000;

/// Up to `limit` events after `after`, oldest first, only from finished transactions (see
/// the module doc): a reader that continues after the last id returned misses nothing.
pub async fn read_after(
    conn: &mut AsyncPgConnection,
    after: i64,
    limit: i64,
) -> AppResult<Vec<StoredEvent>> {
    Ok(diesel::sql_query(
        "SELECT id, kind, site_id, conversation_id, payload, created_at FROM events \
         WHERE id > $1 AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY id LIMIT $2",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit.clamp(1, MAX_PAGE))
    .load(conn)
    .await?)
}

/// A consumer cursor name: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_cursor_name(name: &str) -> AppResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(
            "cursor name must be 1 to 64 letters, digits, '.', '_' or '-'",
        ))
    }
}

#[derive(QueryableByName)]
struct AfterRow {
    #[diesel(sql_type = BigInt)]
    after_id: i64,
}

/// Where the consumer `name` is (0 when it never stored a position).
pub async fn cursor(conn: &mut AsyncPgConnection, name: &str) -> AppResult<i64> {
    let row: Option<AfterRow> =
        diesel::sql_query("SELECT after_id FROM event_cursors WHERE name = $1")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.map(|r| r.after_id).unwrap_or(0))
}

/// Stores the consumer `name`'s position (creates the cursor when new).
pub async fn set_cursor(conn: &mut AsyncPgConnection, name: &str, after: i64) -> AppResult<()> {
    diesel::sql_query(
        "INSERT INTO event_cursors (name, after_id) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET after_id = excluded.after_id, updated_at = now()",
    )
    .bind::<Text, _>(name)
    .bind::<BigInt, _>(after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes events older than `older_than_secs` that every registered cursor has passed.
/// Answers the number deleted.
pub async fn prune(conn: &mut AsyncPgConnection, older_than_secs: i64) -> AppResult<usize> {
    Ok(diesel::sql_query(
        "DELETE FROM events WHERE created_at < now() - make_interval(secs => $1) \
           AND id <= coalesce((SELECT min(after_id) FROM event_cursors), 9223372036854775807)",
    )
    .bind::<diesel::sql_types::Double, _>(older_than_secs as f64)
    .execute(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursor_names() {
        assert!(super::validate_cursor_name("ai-bot.v1_main").is_ok());
        assert!(super::validate_cursor_name("").is_err());
        assert!(super::validate_cursor_name("a b").is_err());
        assert!(super::validate_cursor_name(&"x".repeat(65)).is_err());
    }
}
