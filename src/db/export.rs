//! Export queries: conversations and messages in keyset pages, so an export of any size is
//! read a page at a time (see `src/http/export.rs`, which streams them).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Int2, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::AppResult;

/// What an export covers.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub site_id: Option<Uuid>,
    pub status: Option<String>,
    /// Conversations created (messages: sent) at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// … and before this time.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct ConversationLine {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub site_id: Uuid,
    #[diesel(sql_type = Text)]
    pub site_name: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub visitor_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    pub visitor_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub visitor_email: Option<String>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub assignee_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub assignee_name: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub messages: i64,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub first_response_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Int2>)]
    pub rating: Option<i16>,
}

/// Keyset position in the conversations of an export: (created_at, id).
pub type ConversationKey = (DateTime<Utc>, Uuid);

/// The next page of conversations after `after`, oldest first.
pub async fn conversations_page(
    conn: &mut AsyncPgConnection,
    f: &ExportFilter,
    after: Option<ConversationKey>,
    limit: i64,
) -> AppResult<Vec<ConversationLine>> {
    let (after_at, after_id) = match after {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    Ok(diesel::sql_query(
        "SELECT c.id, c.site_id, s.name AS site_name, c.visitor_id, v.name AS visitor_name, \
           v.email AS visitor_email, c.assignee_id, a.name AS assignee_name, c.status, \
           c.last_seq AS messages, c.created_at, c.updated_at, c.first_response_at, \
           c.resolved_at, c.rating \
         FROM conversations c JOIN sites s ON s.id = c.site_id \
         JOIN visitors v ON v.id = c.visitor_id LEFT JOIN agents a ON a.id = c.assignee_id \
         WHERE ($1::uuid IS NULL OR c.site_id = $1) AND ($2::text IS NULL OR c.status = $2) \
           AND ($3::timestamptz IS NULL OR c.created_at >= $3) \
           AND ($4::timestamptz IS NULL OR c.created_at < $4) \
           AND ($5::timestamptz IS NULL OR (c.created_at, c.id) > ($5, $6)) \
         ORDER BY c.created_at, c.id LIMIT $7",
    )
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(f.site_id)
    .bind::<Nullable<Text>, _>(f.status.as_deref())
    .bind::<Nullable<Timestamptz>, _>(f.from)
    .bind::<Nullable<Timestamptz>, _>(f.to)
    .bind::<Nullable<Timestamptz>, _>(after_at)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(after_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// The next page of conversation ids whose messages may fall in the filter: of the site
/// and status, begun before `to` and active since `from`.
pub async fn message_conversations_page(
    conn: &mut AsyncPgConnection,
    f: &ExportFilter,
    after: Option<ConversationKey>,
    limit: i64,
) -> AppResult<Vec<ConversationKey>> {
    let (after_at, after_id) = match after {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    let rows: Vec<KeyRow> = diesel::sql_query(
        "SELECT c.id, c.created_at FROM conversations c \
         WHERE ($1::uuid IS NULL OR c.site_id = $1) AND ($2::text IS NULL OR c.status = $2) \
           AND ($3::timestamptz IS NULL OR c.updated_at >= $3) \
           AND ($4::timestamptz IS NULL OR c.created_at < $4) \
           AND ($5::timestamptz IS NULL OR (c.created_at, c.id) > ($5, $6)) \
         ORDER BY c.created_at, c.id LIMIT $7",
    )
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(f.site_id)
    .bind::<Nullable<Text>, _>(f.status.as_deref())
    .bind::<Nullable<Timestamptz>, _>(f.from)
    .bind::<Nullable<Timestamptz>, _>(f.to)
    .bind::<Nullable<Timestamptz>, _>(after_at)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(after_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.created_at, r.id)).collect())
}

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct MessageLine {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub conversation_id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub sender_type: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub sender_id: Option<Uuid>,
    #[diesel(sql_type = Bool)]
    pub private: bool,
    #[diesel(sql_type = Text)]
    pub body: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// The next page of messages of `conversations` after (conversation id, seq), in that
/// order, within the filter's time range.
pub async fn messages_page(
    conn: &mut AsyncPgConnection,
    f: &ExportFilter,
    conversations: &[Uuid],
    after: (Uuid, i64),
    limit: i64,
) -> AppResult<Vec<MessageLine>> {
    Ok(diesel::sql_query(
        "SELECT id, conversation_id, seq, sender_type, sender_id, private, body, created_at \
         FROM messages \
         WHERE conversation_id = ANY($1) AND (conversation_id, seq) > ($2, $3) \
           AND ($4::timestamptz IS NULL OR created_at >= $4) \
           AND ($5::timestamptz IS NULL OR created_at < $5) \
         ORDER BY conversation_id, seq LIMIT $6",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(conversations)
    .bind::<diesel::sql_types::Uuid, _>(after.0)
    .bind::<BigInt, _>(after.1)
    .bind::<Nullable<Timestamptz>, _>(f.from)
    .bind::<Nullable<Timestamptz>, _>(f.to)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}
