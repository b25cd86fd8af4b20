//! Queries on `messages`: history pages for resume and the agent API.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::messages;
use crate::error::AppResult;
use crate::protocol::{AttachmentRef, Message, SenderType};

#[declare_sql_function]
extern "SQL" {
    /// The earliest `created_at` among the conversation's messages with
    /// `after_seq < seq < before_seq`, from `message_keys` (schema 3).
    fn kefu_messages_first_at(
        conversation: diesel::sql_types::Uuid,
        after_seq: diesel::sql_types::Int8,
        before_seq: diesel::sql_types::Int8,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>;

    /// The latest `created_at` among the same messages.
    fn kefu_messages_last_at(
        conversation: diesel::sql_types::Uuid,
        after_seq: diesel::sql_types::Int8,
        before_seq: diesel::sql_types::Int8,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>;
}

/// Largest history page (SPEC §3: ≤ 200 per frame).
pub const MAX_PAGE: i64 = 200;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender_type: String,
    pub sender_id: Option<Uuid>,
    pub private: bool,
    pub body: String,
    pub client_msg_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub attachments: Option<serde_json::Value>,
}

/// The stored `attachments` column as the wire list (NULL: none).
fn attachments_of(value: Option<serde_json::Value>) -> Vec<AttachmentRef> {
    match value {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v).unwrap_or_else(|e| {
            log::error!("messages.attachments does not parse: {e}");
            Vec::new()
        }),
    }
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Message {
        Message {
            id: r.id,
            conversation_id: r.conversation_id,
            seq: r.seq,
            sender_type: SenderType::parse(&r.sender_type).unwrap_or(SenderType::System),
            sender_id: r.sender_id,
            private: r.private,
            body: r.body,
            client_msg_id: r.client_msg_id,
            created_at: r.created_at,
            attachments: attachments_of(r.attachments),
        }
    }
}

impl From<&Message> for MessageRow {
    fn from(m: &Message) -> MessageRow {
        MessageRow {
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_type: m.sender_type.as_str().to_string(),
            sender_id: m.sender_id,
            private: m.private,
            body: m.body.clone(),
            client_msg_id: m.client_msg_id.clone(),
            created_at: m.created_at,
            attachments: if m.attachments.is_empty() {
                None
            } else {
                serde_json::to_value(&m.attachments).ok()
            },
        }
    }
}

/// Messages with `seq > after_seq`, oldest first, at most `limit` (≤ 200); `more` is true
/// when later ones exist. Visitors pass `include_private = false`.
pub async fn after(
    conn: &mut AsyncPgConnection,
    conversation_id: Uuid,
    after_seq: i64,
    limit: i64,
    include_private: bool,
) -> AppResult<(Vec<Message>, bool)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut q = messages::table
        .filter(messages::conversation_id.eq(conversation_id))
        // `messages` is partitioned by month on created_at: with the exact time span of the
        // wanted messages, PostgreSQL reads only the months that hold them.
        .filter(messages::created_at.nullable().between(
            kefu_messages_first_at(conversation_id, after_seq, i64::MAX),
            kefu_messages_last_at(conversation_id, after_seq, i64::MAX),
        ))
        .filter(messages::seq.gt(after_seq))
        .select(MessageRow::as_select())
        .order(messages::seq.asc())
        .limit(limit + 1)
        .into_boxed();
    if !include_private {
        q = q.filter(messages::private.eq(false));
    }
    let mut rows: Vec<MessageRow> = q.load(conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(Message::from).collect(), more))
}

/// Messages with `seq < before_seq` (newest page first, returned oldest first), for
/// scrolling back in the console.
pub async fn before(
    conn: &mut AsyncPgConnection,
    conversation_id: Uuid,
    before_seq: i64,
    limit: i64,
) -> AppResult<(Vec<Message>, bool)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut rows: Vec<MessageRow> = messages::table
        .filter(messages::conversation_id.eq(conversation_id))
        .filter(messages::created_at.nullable().between(
            kefu_messages_first_at(conversation_id, 0, before_seq),
            kefu_messages_last_at(conversation_id, 0, before_seq),
        ))
        .filter(messages::seq.lt(before_seq))
        .select(MessageRow::as_select())
        .order(messages::seq.desc())
        .limit(limit + 1)
        .load(conn)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    Ok((rows.into_iter().map(Message::from).collect(), more))
}
