//! Queries on `attachments`: the metadata and access facts of uploaded files (the bytes
//! are in the [`crate::storage`] store).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::attachments;
use crate::error::{AppError, AppResult};
use crate::protocol::{AttachmentRef, SenderType};

/// Most files one message may carry.
pub const MAX_PER_MESSAGE: usize = 10;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = attachments)]
pub struct AttachmentRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub visitor_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub uploader_type: String,
    pub uploader_id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub storage_key: String,
    pub message_id: Option<Uuid>,
    pub private: bool,
    pub created_at: DateTime<Utc>,
}

impl AttachmentRow {
    /// The file as messages carry it.
    pub fn to_ref(&self) -> AttachmentRef {
        AttachmentRef {
            id: self.id,
            name: self.name.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
            url: download_url(self.id),
        }
    }

    /// May this visitor read the file? Its own uploads, and files agents sent it in a
    /// message that was not a private note.
    pub fn visible_to_visitor(&self, visitor_id: Uuid) -> bool {
        self.visitor_id == visitor_id
            && ((self.uploader_type == "visitor" && self.uploader_id == visitor_id)
                || (self.message_id.is_some() && !self.private))
    }
}

/// The download route of a file (the client adds its credentials).
pub fn download_url(id: Uuid) -> String {
    format!("/api/attachments/{id}")
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &AttachmentRow) -> AppResult<()> {
    diesel::insert_into(attachments::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<AttachmentRow>> {
    Ok(attachments::table
        .find(id)
        .select(AttachmentRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn by_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, AttachmentRow>> {
    let rows: Vec<AttachmentRow> = attachments::table
        .filter(attachments::id.eq_any(ids))
        .select(AttachmentRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

/// The files a message may carry, in the order asked: a visitor sends its own uploads, an
/// agent the files agents uploaded for this conversation. Anything else is refused as a
/// whole (the message is not stored).
pub fn check_sendable(
    files: &HashMap<Uuid, AttachmentRow>,
    wanted: &[Uuid],
    sender_type: SenderType,
    sender_id: Option<Uuid>,
    conversation_id: Uuid,
) -> AppResult<Vec<AttachmentRef>> {
    if wanted.len() > MAX_PER_MESSAGE {
        return Err(AppError::bad_request(format!(
            "a message carries at most {MAX_PER_MESSAGE} attachments"
        )));
    }
    let mut out: Vec<AttachmentRef> = Vec::with_capacity(wanted.len());
    for id in wanted {
        if out.iter().any(|a| a.id == *id) {
            continue;
        }
        let ok = files.get(id).filter(|f| match sender_type {
            SenderType::Visitor => f.uploader_type == "visitor" && Some(f.uploader_id) == sender_id,
            SenderType::Agent => {
                f.uploader_type == "agent" && f.conversation_id == Some(conversation_id)
            }
            SenderType::Bot | SenderType::System => false,
        });
        match ok {
            Some(f) => out.push(f.to_ref()),
            None => {
                return Err(AppError::bad_request(format!(
                    "attachment {id} does not exist or was not uploaded by this sender \
                     for this conversation"
                )))
            }
        }
    }
    Ok(out)
}

/// Checks a visitor's files before its first message opens a conversation, so a send that
/// the writer would refuse leaves no empty conversation behind.
pub async fn check_visitor_files(
    conn: &mut AsyncPgConnection,
    visitor_id: Uuid,
    wanted: &[Uuid],
) -> AppResult<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let files = by_ids(conn, wanted).await?;
    check_sendable(
        &files,
        wanted,
        SenderType::Visitor,
        Some(visitor_id),
        Uuid::nil(),
    )
    .map(|_| ())
}

/// Records the message that carried each file (the first one) and whether every message
/// that carried it was a private note. `(file, message, private, conversation)`.
pub async fn link(
    conn: &mut AsyncPgConnection,
    links: &[(Uuid, Uuid, bool, Uuid)],
) -> AppResult<()> {
    let files: Vec<Uuid> = links.iter().map(|l| l.0).collect();
    let messages: Vec<Uuid> = links.iter().map(|l| l.1).collect();
    let private: Vec<bool> = links.iter().map(|l| l.2).collect();
    let conversations: Vec<Uuid> = links.iter().map(|l| l.3).collect();
    diesel::sql_query(
        "UPDATE attachments a SET \
           private = CASE WHEN a.message_id IS NULL THEN v.private \
                          ELSE a.private AND v.private END, \
           message_id = COALESCE(a.message_id, v.message_id), \
           conversation_id = COALESCE(a.conversation_id, v.conversation_id) \
         FROM unnest($1, $2, $3, $4) AS v(id, message_id, private, conversation_id) \
         WHERE a.id = v.id",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(&files)
    .bind::<Array<diesel::sql_types::Uuid>, _>(&messages)
    .bind::<Array<Bool>, _>(&private)
    .bind::<Array<diesel::sql_types::Uuid>, _>(&conversations)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        uploader_type: &str,
        uploader: Uuid,
        visitor: Uuid,
        conv: Option<Uuid>,
    ) -> AttachmentRow {
        AttachmentRow {
            id: Uuid::new_v4(),
            site_id: Uuid::new_v4(),
            visitor_id: visitor,
            conversation_id: conv,
            uploader_type: uploader_type.into(),
            uploader_id: uploader,
            name: "a.png".into(),
            content_type: "image/png".into(),
            size: 3,
            storage_key: "k".into(),
            message_id: None,
            private: false,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn senders_send_only_their_own_files() {
        let (visitor, other, agent, conv) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let mine = row("visitor", visitor, visitor, None);
        let theirs = row("visitor", other, other, None);
        let agents = row("agent", agent, visitor, Some(conv));
        let files: HashMap<Uuid, AttachmentRow> = [&mine, &theirs, &agents]
            .into_iter()
            .map(|r| (r.id, r.clone()))
            .collect();
        let v = SenderType::Visitor;
        assert_eq!(
            check_sendable(&files, &[mine.id], v, Some(visitor), conv)
                .expect("own file")
                .len(),
            1
        );
        assert!(check_sendable(&files, &[theirs.id], v, Some(visitor), conv).is_err());
        assert!(check_sendable(&files, &[agents.id], v, Some(visitor), conv).is_err());
        assert!(check_sendable(&files, &[Uuid::new_v4()], v, Some(visitor), conv).is_err());
        let a = SenderType::Agent;
        assert!(check_sendable(&files, &[agents.id], a, Some(agent), conv).is_ok());
        assert!(check_sendable(&files, &[agents.id], a, Some(agent), Uuid::new_v4()).is_err());
        assert!(check_sendable(&files, &[mine.id], a, Some(agent), conv).is_err());
        let many: Vec<Uuid> = (0..11).map(|_| mine.id).collect();
        assert!(check_sendable(&files, &many, v, Some(visitor), conv).is_err());
    }

    #[test]
    fn visitors_see_own_uploads_and_public_agent_files() {
        let (visitor, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let own = row("visitor", visitor, visitor, None);
        assert!(own.visible_to_visitor(visitor));
        assert!(!own.visible_to_visitor(Uuid::new_v4()));
        let mut sent = row("agent", agent, visitor, Some(Uuid::new_v4()));
        assert!(!sent.visible_to_visitor(visitor), "not sent yet");
        sent.message_id = Some(Uuid::new_v4());
        sent.private = true;
        assert!(!sent.visible_to_visitor(visitor), "sent in a private note");
        sent.private = false;
        assert!(sent.visible_to_visitor(visitor));
    }
}
