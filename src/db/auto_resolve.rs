//! Auto-resolve: per-site idle limits (`auto_resolve_policies`) and the conversations past
//! them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Int4, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::error::AppResult;

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    cutoff: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Shortest {
    #[diesel(sql_type = Nullable<BigInt>)]
    secs: Option<i64>,
}

/// Unresolved conversations idle past their limit (the site's policy, else `global_secs`;
/// 0 = never), the longest idle first: each with the activity cutoff that applies to it.
pub async fn idle_conversations(
    conn: &mut AsyncPgConnection,
    global_secs: i64,
    limit: i64,
) -> AppResult<Vec<(Uuid, DateTime<Utc>)>> {
    // The shortest limit in force bounds the index scan: with auto-resolve off everywhere
    // nothing is read at all.
    let shortest: Shortest = diesel::sql_query(
        "SELECT min(s)::int8 AS secs FROM ( \
           SELECT idle_secs AS s FROM auto_resolve_policies WHERE idle_secs > 0 \
           UNION ALL SELECT $1 WHERE $1 > 0) t",
    )
    .bind::<BigInt, _>(global_secs)
    .get_result(conn)
    .await?;
    let Some(shortest) = shortest.secs else {
        return Ok(Vec::new());
    };
    let rows: Vec<Due> = diesel::sql_query(
        "SELECT c.id, now() - make_interval(secs => coalesce(p.idle_secs, $1)) AS cutoff \
         FROM conversations c LEFT JOIN auto_resolve_policies p ON p.site_id = c.site_id \
         WHERE c.status <> 'resolved' \
           AND c.updated_at < now() - make_interval(secs => $2) \
           AND coalesce(p.idle_secs, $1) > 0 \
           AND c.updated_at < now() - make_interval(secs => coalesce(p.idle_secs, $1)) \
         ORDER BY c.updated_at LIMIT $3",
    )
    .bind::<Double, _>(global_secs as f64)
    .bind::<Double, _>(shortest as f64)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.cutoff)).collect())
}

#[derive(QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = Int4)]
    idle_secs: i32,
}

/// The site's own idle limit in seconds, `None` when it follows the global setting.
pub async fn policy(conn: &mut AsyncPgConnection, site_id: Uuid) -> AppResult<Option<i32>> {
    let row: Option<PolicyRow> =
        diesel::sql_query("SELECT idle_secs FROM auto_resolve_policies WHERE site_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(site_id)
            .get_result(conn)
            .await
            .optional()?;
    Ok(row.map(|r| r.idle_secs))
}

/// Sets (`Some`) or removes (`None`: back to the global setting) the site's idle limit.
pub async fn set_policy(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    idle_secs: Option<i32>,
) -> AppResult<()> {
    match idle_secs {
        Some(secs) => {
            diesel::sql_query(
                "INSERT INTO auto_resolve_policies (site_id, idle_secs) VALUES ($1, $2) \
                 ON CONFLICT (site_id) DO UPDATE SET idle_secs = excluded.idle_secs, \
                   updated_at = now()",
            )
            .bind::<diesel::sql_types::Uuid, _>(site_id)
            .bind::<Int4, _>(secs)
            .execute(conn)
            .await?;
        }
        None => {
            diesel::sql_query("DELETE FROM auto_resolve_policies WHERE site_id = $1")
                .bind::<diesel::sql_types::Uuid, _>(site_id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}
