//! Full-text search for the console (issue 9): messages by their bodies (notes included:
//! only agents search) and visitors by name or email.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::messages::MessageRow;
use crate::domain::search::TextQuery;
use crate::error::AppResult;
use crate::protocol::Message;

#[derive(diesel::QueryableByName)]
struct MessageHit {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    conversation_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    seq: i64,
    #[diesel(sql_type = Text)]
    sender_type: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    sender_id: Option<Uuid>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    private: bool,
    #[diesel(sql_type = Text)]
    body: String,
    #[diesel(sql_type = Nullable<Text>)]
    client_msg_id: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    attachments: Option<serde_json::Value>,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    site_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    visitor_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    visitor_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    visitor_email: Option<String>,
}

/// Where a hit lives.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationBrief {
    pub id: Uuid,
    pub site_id: Uuid,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VisitorBrief {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageResult {
    pub message: Message,
    pub conversation: ConversationBrief,
    pub visitor: VisitorBrief,
}

/// How far back the first, cheap pass of a message search looks.
const RECENT_DAYS: i64 = 30;

/// Messages matching `q`, newest first.
///
/// The index finds every match; ordering them by time means fetching them all. A common
/// word matches thousands of messages (4 % of 300,000 generated ones match 发票: 60–150 ms
/// over all of them), so the last [`RECENT_DAYS`] days are searched first (their month
/// partitions only), and everything only when they hold fewer than `limit` matches.
pub async fn messages(
    conn: &mut AsyncPgConnection,
    q: &TextQuery,
    site: Option<Uuid>,
    limit: i64,
) -> AppResult<Vec<MessageResult>> {
    let since = Utc::now() - chrono::Duration::days(RECENT_DAYS);
    let recent = messages_since(conn, q, site, limit, Some(since)).await?;
    if recent.len() as i64 >= limit {
        return Ok(recent);
    }
    messages_since(conn, q, site, limit, None).await
}

async fn messages_since(
    conn: &mut AsyncPgConnection,
    q: &TextQuery,
    site: Option<Uuid>,
    limit: i64,
    since: Option<DateTime<Utc>>,
) -> AppResult<Vec<MessageResult>> {
    // The index is on the expression `kefu_search_vector(body)`: the WHERE clause must
    // use exactly it. Only the query side varies, as bind parameters.
    let matcher = match (&q.words, &q.cjk) {
        (Some(_), Some(_)) => "(websearch_to_tsquery('english', $1) && to_tsquery('simple', $2))",
        (Some(_), None) => "websearch_to_tsquery('english', $1)",
        (None, _) => "to_tsquery('simple', $2)",
    };
    // A literal condition (not `$5 IS NULL OR …`) so PostgreSQL prunes the old months.
    let window = if since.is_some() {
        "AND m.created_at >= $5"
    } else {
        ""
    };
    let sql = format!(
        "SELECT m.id, m.conversation_id, m.seq, m.sender_type, m.sender_id, m.private, m.body, \
                m.client_msg_id, m.created_at, m.attachments, \
                c.site_id, c.status, c.visitor_id, \
                v.name AS visitor_name, v.email AS visitor_email \
           FROM messages m \
           JOIN conversations c ON c.id = m.conversation_id \
           JOIN visitors v ON v.id = c.visitor_id \
          WHERE kefu_search_vector(m.body) @@ {matcher} \
            AND ($3::uuid IS NULL OR c.site_id = $3) {window} \
          ORDER BY m.created_at DESC, m.id DESC \
          LIMIT $4"
    );
    let hits: Vec<MessageHit> = diesel::sql_query(sql)
        .bind::<Text, _>(q.words.as_deref().unwrap_or(""))
        .bind::<Text, _>(q.cjk.as_deref().unwrap_or(""))
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(site)
        .bind::<diesel::sql_types::Int8, _>(limit)
        .bind::<Timestamptz, _>(since.unwrap_or_else(Utc::now))
        .load(conn)
        .await?;
    Ok(hits
        .into_iter()
        .map(|h| MessageResult {
            message: Message::from(MessageRow {
                id: h.id,
                conversation_id: h.conversation_id,
                seq: h.seq,
                sender_type: h.sender_type,
                sender_id: h.sender_id,
                private: h.private,
                body: h.body,
                client_msg_id: h.client_msg_id,
                created_at: h.created_at,
                attachments: h.attachments,
            }),
            conversation: ConversationBrief {
                id: h.conversation_id,
                site_id: h.site_id,
                status: h.status,
            },
            visitor: VisitorBrief {
                id: h.visitor_id,
                name: h.visitor_name,
                email: h.visitor_email,
            },
        })
        .collect())
}

#[derive(diesel::QueryableByName, Serialize)]
pub struct VisitorResult {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub site_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    pub name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub email: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen_at: DateTime<Utc>,
    /// The visitor's latest conversation, if any.
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub conversation_id: Option<Uuid>,
}

/// `%`, `_` and `\` are literal in what the agent typed.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Visitors whose name or email contains `text` (case-insensitive), recently seen first.
pub async fn visitors(
    conn: &mut AsyncPgConnection,
    text: &str,
    site: Option<Uuid>,
    limit: i64,
) -> AppResult<Vec<VisitorResult>> {
    Ok(diesel::sql_query(
        "SELECT v.id, v.site_id, v.name, v.email, v.last_seen_at, \
                (SELECT c.id FROM conversations c WHERE c.visitor_id = v.id \
                  ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS conversation_id \
           FROM visitors v \
          WHERE (v.name ILIKE $1 OR v.email ILIKE $1) \
            AND ($2::uuid IS NULL OR v.site_id = $2) \
          ORDER BY v.last_seen_at DESC, v.id DESC \
          LIMIT $3",
    )
    .bind::<Text, _>(like_pattern(text))
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(site)
    .bind::<diesel::sql_types::Int8, _>(limit)
    .load(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_specials_are_literal() {
        assert_eq!(super::like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
