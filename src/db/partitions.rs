//! Upkeep of the monthly partitions of `messages` (schema 2, see docs/DATABASE.md).
//!
//! The coming months' partitions are created ahead of time — after the migrations at
//! start-up, then once a day — so new messages land in their own month rather than in the
//! default partition (which still catches them if upkeep ever falls behind).

use std::time::Duration;

use diesel::sql_types::{Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::Db;
use crate::error::AppResult;

/// Months of partitions kept ready beyond the current one.
pub const MONTHS_AHEAD: i32 = 3;

/// How often a running node checks the coming months.
const UPKEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

#[derive(QueryableByName)]
struct Created {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Creates the missing partitions up to [`MONTHS_AHEAD`] months ahead; returns their names.
pub async fn ensure(conn: &mut AsyncPgConnection) -> AppResult<Vec<String>> {
    let created: Vec<Created> = diesel::sql_query("SELECT kefu_ensure_partitions($1) AS name")
        .bind::<Integer, _>(MONTHS_AHEAD)
        .load(conn)
        .await?;
    Ok(created.into_iter().map(|c| c.name).collect())
}

/// Runs [`ensure`] once a day for as long as the node runs.
pub fn spawn_upkeep(db: Db) {
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            match db.run(async |conn| ensure(conn).await).await {
                Ok(names) if !names.is_empty() => {
                    log::info!("created message partitions {}", names.join(", "))
                }
                Ok(_) => {}
                Err(e) => log::warn!("message partition upkeep failed (retried tomorrow): {e}"),
            }
        }
    });
}
