//! Queries on `sites`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::sites;
use crate::error::AppResult;
use crate::protocol::Site;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sites)]
pub struct SiteRow {
    pub id: Uuid,
    pub name: String,
    pub widget_key: String,
    pub allowed_origins: Vec<String>,
    pub greeting: String,
    pub offline_message: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SiteRow> for Site {
    fn from(r: SiteRow) -> Site {
        Site {
            id: r.id,
            name: r.name,
            widget_key: r.widget_key,
            allowed_origins: r.allowed_origins,
            greeting: r.greeting,
            offline_message: r.offline_message,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Fields an admin may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = sites)]
pub struct SitePatch {
    pub name: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub greeting: Option<String>,
    pub offline_message: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A fresh public widget key: 96 random bits, URL-safe.
pub fn new_widget_key() -> String {
    format!("wk_{}", hex::encode(rand::random::<[u8; 12]>()))
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    name: String,
    allowed_origins: Vec<String>,
    greeting: String,
    offline_message: String,
) -> AppResult<Site> {
    let now = Utc::now();
    let row = SiteRow {
        id: Uuid::new_v4(),
        name,
        widget_key: new_widget_key(),
        allowed_origins,
        greeting,
        offline_message,
        created_at: now,
        updated_at: now,
    };
    let row: SiteRow = diesel::insert_into(sites::table)
        .values(&row)
        .returning(SiteRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

pub async fn list(conn: &mut AsyncPgConnection) -> AppResult<Vec<Site>> {
    let rows: Vec<SiteRow> = sites::table
        .select(SiteRow::as_select())
        .order((sites::created_at.asc(), sites::id.asc()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Site::from).collect())
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Site>> {
    let row: Option<SiteRow> = sites::table
        .find(id)
        .select(SiteRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Site::from))
}

pub async fn by_widget_key(conn: &mut AsyncPgConnection, key: &str) -> AppResult<Option<Site>> {
    let row: Option<SiteRow> = sites::table
        .filter(sites::widget_key.eq(key))
        .select(SiteRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Site::from))
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    mut patch: SitePatch,
) -> AppResult<Option<Site>> {
    patch.updated_at = Some(Utc::now());
    let row: Option<SiteRow> = diesel::update(sites::table.find(id))
        .set(&patch)
        .returning(SiteRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    Ok(row.map(Site::from))
}
