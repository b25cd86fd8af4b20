//! Queries on `canned_responses`: shared replies (no owner; admins manage them) for one
//! site or every site, and each agent's own.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::schema::canned_responses as canned;
use crate::error::AppResult;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = canned)]
pub struct CannedResponse {
    pub id: Uuid,
    pub site_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub shortcut: String,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The wire shape: the row plus `shared` (no owner).
#[derive(Serialize)]
pub struct CannedView<'a> {
    #[serde(flatten)]
    pub row: &'a CannedResponse,
    pub shared: bool,
}

impl CannedResponse {
    pub fn view(&self) -> CannedView<'_> {
        CannedView {
            row: self,
            shared: self.owner_id.is_none(),
        }
    }
}

/// What `agent` may use: the shared ones and its own, for `site` (and every site) when
/// given, ordered by shortcut.
pub async fn visible(
    conn: &mut AsyncPgConnection,
    agent: Uuid,
    site: Option<Uuid>,
) -> AppResult<Vec<CannedResponse>> {
    let mut q = canned::table
        .filter(canned::owner_id.is_null().or(canned::owner_id.eq(agent)))
        .select(CannedResponse::as_select())
        .order((
            canned::shortcut.asc(),
            canned::owner_id.asc(),
            canned::id.asc(),
        ))
        .into_boxed();
    if let Some(s) = site {
        q = q.filter(canned::site_id.is_null().or(canned::site_id.eq(s)));
    }
    Ok(q.load(conn).await?)
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<CannedResponse>> {
    Ok(canned::table
        .find(id)
        .select(CannedResponse::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &CannedResponse) -> AppResult<()> {
    diesel::insert_into(canned::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update(conn: &mut AsyncPgConnection, row: &CannedResponse) -> AppResult<()> {
    diesel::update(canned::table.find(row.id))
        .set((
            canned::site_id.eq(row.site_id),
            canned::shortcut.eq(&row.shortcut),
            canned::title.eq(&row.title),
            canned::body.eq(&row.body),
            canned::updated_at.eq(row.updated_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<bool> {
    Ok(diesel::delete(canned::table.find(id)).execute(conn).await? > 0)
}
