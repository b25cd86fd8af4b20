//! Queries on `sites`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::sites;
use crate::domain::business_hours::BusinessHours;
use crate::domain::identity;
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
    pub business_hours: Option<serde_json::Value>,
    /// Stays in this row: a `Site` only learns whether there is one and its last characters.
    pub identity_secret: Option<String>,
}

/// A stored schedule; one that no longer parses counts as none (always open) and is logged.
fn business_hours(id: Uuid, v: Option<serde_json::Value>) -> Option<BusinessHours> {
    let v = v?;
    match serde_json::from_value(v) {
        Ok(h) => Some(h),
        Err(e) => {
            log::warn!("site {id}: stored business_hours unreadable ({e}); treated as always open");
            None
        }
    }
}

impl From<SiteRow> for Site {
    fn from(r: SiteRow) -> Site {
        Site {
            business_hours: business_hours(r.id, r.business_hours),
            identity_verification: r.identity_secret.is_some(),
            identity_secret_hint: r.identity_secret.as_deref().map(identity::hint),
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
    /// `Some(None)` removes the schedule (always open).
    pub business_hours: Option<Option<serde_json::Value>>,
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
        business_hours: None,
        identity_secret: None,
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

/// Sets (or with `None` removes) the site's identity secret.
pub async fn set_identity_secret(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    secret: Option<String>,
) -> AppResult<Option<Site>> {
    let row: Option<SiteRow> = diesel::update(sites::table.find(id))
        .set((
            sites::identity_secret.eq(secret),
            sites::updated_at.eq(Utc::now()),
        ))
        .returning(SiteRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    Ok(row.map(Site::from))
}

/// The site's identity secret, read when a visitor presents a `user_id` (never cached).
pub async fn identity_secret(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<String>> {
    let secret: Option<Option<String>> = sites::table
        .find(id)
        .select(sites::identity_secret)
        .first(conn)
        .await
        .optional()?;
    Ok(secret.flatten())
}

/// Ids of the sites outside their business hours at `now`: the assigner leaves their
/// waiting conversations in the queue.
pub async fn closed_now(conn: &mut AsyncPgConnection, now: DateTime<Utc>) -> AppResult<Vec<Uuid>> {
    let rows: Vec<(Uuid, Option<serde_json::Value>)> = sites::table
        .filter(sites::business_hours.is_not_null())
        .select((sites::id, sites::business_hours))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(id, v)| business_hours(*id, v.clone()).is_some_and(|h| !h.is_open(now)))
        .map(|(id, _)| id)
        .collect())
}
