//! Queries on `visitors`. A visitor is identified by an opaque token whose SHA-256 is
//! stored; the token itself never touches the database.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{visitor_tokens, visitors};
use crate::error::AppResult;
use crate::protocol::Visitor;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = visitors)]
pub struct VisitorRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub attributes: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub user_id: Option<String>,
}

impl From<VisitorRow> for Visitor {
    fn from(r: VisitorRow) -> Visitor {
        Visitor {
            id: r.id,
            site_id: r.site_id,
            name: r.name,
            email: r.email,
            attributes: r.attributes,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            user_id: r.user_id,
        }
    }
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    token_hash: &[u8],
) -> AppResult<Visitor> {
    let row: VisitorRow = diesel::insert_into(visitors::table)
        .values((
            visitors::id.eq(Uuid::new_v4()),
            visitors::site_id.eq(site_id),
            visitors::token_hash.eq(token_hash),
        ))
        .returning(VisitorRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

/// A visit ends after this long without the visitor being seen; the next connection
/// starts a new one (time on site counts from there).
pub const VISIT_GAP_MINUTES: i32 = 30;

/// The visitor behind a token on this site, marking it seen (and starting a new visit
/// when the last one ended).
pub async fn by_token(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    token_hash: &[u8],
) -> AppResult<Option<Visitor>> {
    let device = visitor_tokens::table
        .filter(visitor_tokens::token_hash.eq(token_hash))
        .select(visitor_tokens::visitor_id)
        .single_value();
    let row: Option<VisitorRow> = diesel::update(
        visitors::table
            .filter(
                visitors::token_hash
                    .eq(token_hash)
                    .or(visitors::id.nullable().eq(device)),
            )
            .filter(visitors::site_id.eq(site_id)),
    )
    .set((
        visitors::last_seen_at.eq(Utc::now()),
        // Old values on the right of SET: a visitor unseen for the gap starts a new visit.
        visitors::visit_started_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
            &format!(
                "CASE WHEN last_seen_at < now() - interval '{VISIT_GAP_MINUTES} minutes' \
                 THEN now() ELSE visit_started_at END"
            ),
        )),
    ))
    .returning(VisitorRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(Visitor::from))
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Visitor>> {
    let row: Option<VisitorRow> = visitors::table
        .find(id)
        .select(VisitorRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Visitor::from))
}

/// Sets the given fields; `attributes` is merged into the stored object
/// ([`crate::domain::attributes::merge`]: keys replace their old values, `null` removes a
/// key, other keys stay), under a row lock so concurrent patches do not lose keys.
pub async fn update_profile(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    name: Option<String>,
    email: Option<String>,
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
) -> AppResult<Visitor> {
    use diesel_async::AsyncConnection;
    conn.transaction(async |conn| {
        let merged = match &attributes {
            None => None,
            Some(patch) => {
                let current: serde_json::Value = visitors::table
                    .find(id)
                    .select(visitors::attributes)
                    .for_update()
                    .first(conn)
                    .await?;
                Some(crate::domain::attributes::merge(&current, patch)?)
            }
        };
        let row: VisitorRow = diesel::update(visitors::table.find(id))
            .set((
                name.map(|n| visitors::name.eq(n)),
                email.map(|e| visitors::email.eq(e)),
                merged.map(|a| visitors::attributes.eq(a)),
                visitors::last_seen_at.eq(Utc::now()),
            ))
            .returning(VisitorRow::as_returning())
            .get_result(conn)
            .await?;
        Ok(row.into())
    })
    .await
}

// --- verified identities (identity verification) ------------------------------------------

/// The visitor of a verified user of this site, marking it seen.
pub async fn by_user(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    user_id: &str,
) -> AppResult<Option<Visitor>> {
    let row: Option<VisitorRow> = diesel::update(
        visitors::table
            .filter(visitors::site_id.eq(site_id))
            .filter(visitors::user_id.eq(user_id)),
    )
    .set(visitors::last_seen_at.eq(Utc::now()))
    .returning(VisitorRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(Visitor::from))
}

/// A new visitor for a verified user; `None` when another device created it first.
pub async fn create_for_user(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    token_hash: &[u8],
    user_id: &str,
) -> AppResult<Option<Visitor>> {
    let row: Option<VisitorRow> = diesel::insert_into(visitors::table)
        .values((
            visitors::id.eq(Uuid::new_v4()),
            visitors::site_id.eq(site_id),
            visitors::token_hash.eq(token_hash),
            visitors::user_id.eq(user_id),
        ))
        .on_conflict_do_nothing()
        .returning(VisitorRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    Ok(row.map(Visitor::from))
}

/// An anonymous visitor signs in: it becomes the user's visitor, keeping its history.
/// `None` when it is no longer anonymous or the user has a visitor already.
pub async fn claim_for_user(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    user_id: &str,
) -> AppResult<Option<Visitor>> {
    let site: Option<Uuid> = visitors::table
        .find(id)
        .select(visitors::site_id)
        .first(conn)
        .await
        .optional()?;
    let Some(site) = site else { return Ok(None) };
    // A race with another device creating the user's visitor ends at the unique index.
    let taken: bool = diesel::select(diesel::dsl::exists(
        visitors::table
            .filter(visitors::site_id.eq(site))
            .filter(visitors::user_id.eq(user_id)),
    ))
    .get_result(conn)
    .await?;
    if taken {
        return Ok(None);
    }
    let row: Option<VisitorRow> =
        diesel::update(visitors::table.find(id).filter(visitors::user_id.is_null()))
            .set((
                visitors::user_id.eq(user_id),
                visitors::last_seen_at.eq(Utc::now()),
            ))
            .returning(VisitorRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.map(Visitor::from))
}

/// One more device token for a visitor.
pub async fn add_token(
    conn: &mut AsyncPgConnection,
    visitor_id: Uuid,
    token_hash: &[u8],
) -> AppResult<()> {
    diesel::insert_into(visitor_tokens::table)
        .values((
            visitor_tokens::token_hash.eq(token_hash),
            visitor_tokens::visitor_id.eq(visitor_id),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks visitors that are connected now as seen (their visit goes on).
pub async fn touch_seen(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> AppResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(
        diesel::update(visitors::table.filter(visitors::id.eq_any(ids)))
            .set(visitors::last_seen_at.eq(Utc::now()))
            .execute(conn)
            .await?,
    )
}

/// When the current visits of `ids` began.
pub async fn visit_started_many(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> AppResult<Vec<(Uuid, DateTime<Utc>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(visitors::table
        .filter(visitors::id.eq_any(ids))
        .select((visitors::id, visitors::visit_started_at))
        .load(conn)
        .await?)
}
