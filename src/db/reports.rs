//! Reports: conversations per day, first response and resolution times (median, p90), per
//! agent and per site, and the CSAT average, over a date range.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::error::AppResult;

#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Day {
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(sql_type = BigInt)]
    pub conversations: i64,
    #[diesel(sql_type = BigInt)]
    pub resolved: i64,
}

/// Figures of one group (everything, one agent, one site).
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct Figures {
    #[diesel(sql_type = BigInt)]
    #[serde(skip)]
    pub by_agent: i64,
    #[diesel(sql_type = BigInt)]
    #[serde(skip)]
    pub by_site: i64,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub conversations: i64,
    #[diesel(sql_type = BigInt)]
    pub resolved: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub first_response_median_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub first_response_p90_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolution_median_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub resolution_p90_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub csat_average: Option<f64>,
    #[diesel(sql_type = BigInt)]
    pub csat_count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub site_id: Option<Uuid>,
    pub conversations_per_day: Vec<Day>,
    pub totals: Option<Figures>,
    pub per_agent: Vec<Figures>,
    pub per_site: Vec<Figures>,
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    found: bool,
}

/// Where CSAT ratings come from, as SQL answering `(conversation_id uuid, rating numeric)`,
/// one row per rated conversation. A `csat_ratings(conversation_id, rating, …)` table is
/// used when the database has one (the CSAT feature's own table); otherwise the rating
/// stored on the conversation (`conversations.rating`, set by the widget's `rating` frame).
pub async fn csat_ratings_sql(conn: &mut AsyncPgConnection) -> AppResult<&'static str> {
    let table: Exists =
        diesel::sql_query("SELECT to_regclass('csat_ratings') IS NOT NULL AS found")
            .get_result(conn)
            .await?;
    Ok(if table.found {
        "SELECT conversation_id, avg(rating)::float8 AS rating FROM csat_ratings \
         GROUP BY conversation_id"
    } else {
        "SELECT id AS conversation_id, rating::float8 AS rating FROM conversations \
         WHERE rating IS NOT NULL"
    })
}

/// The report of conversations created in `[from, to)`, of one site or all.
pub async fn report(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    site_id: Option<Uuid>,
) -> AppResult<Report> {
    let conversations_per_day: Vec<Day> = diesel::sql_query(
        "SELECT to_char(date_trunc('day', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day, \
           count(*) AS conversations, count(*) FILTER (WHERE status = 'resolved') AS resolved \
         FROM conversations \
         WHERE created_at >= $1 AND created_at < $2 AND ($3::uuid IS NULL OR site_id = $3) \
         GROUP BY 1 ORDER BY 1",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(site_id)
    .load(conn)
    .await?;

    let ratings = csat_ratings_sql(conn).await?;
    let groups: Vec<Figures> = diesel::sql_query(format!(
        "WITH conv AS ( \
           SELECT c.id, c.site_id, c.assignee_id, c.status, \
             extract(epoch FROM c.first_response_at - c.created_at)::float8 AS frt, \
             extract(epoch FROM c.resolved_at - c.created_at)::float8 AS rt \
           FROM conversations c \
           WHERE c.created_at >= $1 AND c.created_at < $2 \
             AND ($3::uuid IS NULL OR c.site_id = $3)), \
         ratings AS ({ratings}), \
         g AS ( \
           SELECT grouping(c.assignee_id)::int8 AS by_agent_off, \
             grouping(c.site_id)::int8 AS by_site_off, c.assignee_id, c.site_id, \
             count(*) AS conversations, count(*) FILTER (WHERE c.status = 'resolved') AS resolved, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY c.frt) AS frt50, \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY c.frt) AS frt90, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY c.rt) \
               FILTER (WHERE c.status = 'resolved') AS rt50, \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY c.rt) \
               FILTER (WHERE c.status = 'resolved') AS rt90, \
             avg(r.rating)::float8 AS csat_average, count(r.rating) AS csat_count \
           FROM conv c LEFT JOIN ratings r ON r.conversation_id = c.id \
           GROUP BY GROUPING SETS ((), (c.assignee_id), (c.site_id))) \
         SELECT 1 - g.by_agent_off AS by_agent, 1 - g.by_site_off AS by_site, \
           g.assignee_id AS agent_id, g.site_id, \
           CASE WHEN g.by_agent_off = 0 THEN coalesce(a.name, 'Unassigned') \
                WHEN g.by_site_off = 0 THEN s.name END AS name, \
           g.conversations, g.resolved, g.frt50 AS first_response_median_seconds, \
           g.frt90 AS first_response_p90_seconds, g.rt50 AS resolution_median_seconds, \
           g.rt90 AS resolution_p90_seconds, g.csat_average, g.csat_count \
         FROM g LEFT JOIN agents a ON a.id = g.assignee_id LEFT JOIN sites s ON s.id = g.site_id \
         ORDER BY g.conversations DESC, name"
    ))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(site_id)
    .load(conn)
    .await?;
    let mut totals = None;
    let mut per_agent = Vec::new();
    let mut per_site = Vec::new();
    for g in groups {
        match (g.by_agent, g.by_site) {
            (1, _) => per_agent.push(g),
            (_, 1) => per_site.push(g),
            _ => totals = Some(g),
        }
    }
    Ok(Report {
        from,
        to,
        site_id,
        conversations_per_day,
        totals,
        per_agent,
        per_site,
    })
}
