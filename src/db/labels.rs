//! Queries on `labels` and `conversation_labels`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::schema::{conversation_labels, labels};
use crate::error::AppResult;
use crate::protocol::{Conversation, LabelRef};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = labels)]
pub struct Label {
    pub id: Uuid,
    pub name: String,
    pub color: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn list(conn: &mut AsyncPgConnection) -> AppResult<Vec<Label>> {
    Ok(labels::table
        .select(Label::as_select())
        .order((labels::name.asc(), labels::id.asc()))
        .load(conn)
        .await?)
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Label>> {
    Ok(labels::table
        .find(id)
        .select(Label::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &Label) -> AppResult<()> {
    diesel::insert_into(labels::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update(conn: &mut AsyncPgConnection, row: &Label) -> AppResult<()> {
    diesel::update(labels::table.find(row.id))
        .set((
            labels::name.eq(&row.name),
            labels::color.eq(&row.color),
            labels::description.eq(&row.description),
            labels::updated_at.eq(row.updated_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<bool> {
    Ok(diesel::delete(labels::table.find(id)).execute(conn).await? > 0)
}

/// Puts `label` on `conversation` (nothing when it is there already).
pub async fn add(conn: &mut AsyncPgConnection, conversation: Uuid, label: Uuid) -> AppResult<()> {
    diesel::insert_into(conversation_labels::table)
        .values((
            conversation_labels::conversation_id.eq(conversation),
            conversation_labels::label_id.eq(label),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn remove(
    conn: &mut AsyncPgConnection,
    conversation: Uuid,
    label: Uuid,
) -> AppResult<bool> {
    Ok(diesel::delete(
        conversation_labels::table
            .filter(conversation_labels::conversation_id.eq(conversation))
            .filter(conversation_labels::label_id.eq(label)),
    )
    .execute(conn)
    .await?
        > 0)
}

/// The labels of each of these conversations, by name.
pub async fn of_conversations(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<LabelRef>>> {
    let mut out: HashMap<Uuid, Vec<LabelRef>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(Uuid, Uuid, String, String)> = conversation_labels::table
        .inner_join(labels::table)
        .filter(conversation_labels::conversation_id.eq_any(ids))
        .select((
            conversation_labels::conversation_id,
            labels::id,
            labels::name,
            labels::color,
        ))
        .order((labels::name.asc(), labels::id.asc()))
        .load(conn)
        .await?;
    for (conv, id, name, color) in rows {
        out.entry(conv)
            .or_default()
            .push(LabelRef { id, name, color });
    }
    Ok(out)
}

/// Fills in `labels` (an empty list for none) on conversations read from the database.
pub async fn attach(conn: &mut AsyncPgConnection, convs: &mut [Conversation]) -> AppResult<()> {
    let ids: Vec<Uuid> = convs.iter().map(|c| c.id).collect();
    let mut by_conv = of_conversations(conn, &ids).await?;
    for c in convs.iter_mut() {
        c.labels = Some(by_conv.remove(&c.id).unwrap_or_default());
    }
    Ok(())
}
