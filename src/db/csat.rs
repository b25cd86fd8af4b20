//! Queries on `csat_ratings`: one rating per conversation. The conversation row keeps a
//! copy (`rating`, `rating_comment`) written in the same transaction, so every
//! conversation frame and inbox view carries it without a join.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::schema::{conversations, csat_ratings};
use crate::domain::csat;
use crate::error::{AppError, AppResult};
use crate::protocol::Conversation;

/// Stores (or changes) the visitor's rating of a conversation. Refused with `conflict`
/// unless it is resolved and within `window` of its resolution.
pub async fn rate(
    conn: &mut AsyncPgConnection,
    conversation_id: Uuid,
    visitor_id: Uuid,
    score: i16,
    comment: Option<String>,
    window: chrono::Duration,
) -> AppResult<Conversation> {
    conn.transaction(async |conn| {
        let row: Option<(String, Option<DateTime<Utc>>, Uuid)> = conversations::table
            .find(conversation_id)
            .select((
                conversations::status,
                conversations::resolved_at,
                conversations::visitor_id,
            ))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let (status, resolved_at, owner) =
            row.ok_or_else(|| AppError::not_found("conversation"))?;
        if owner != visitor_id {
            return Err(AppError::forbidden("not your conversation"));
        }
        let now = Utc::now();
        csat::may_rate(&status, resolved_at, now, window)?;
        diesel::insert_into(csat_ratings::table)
            .values((
                csat_ratings::conversation_id.eq(conversation_id),
                csat_ratings::rating.eq(score),
                csat_ratings::comment.eq(&comment),
                csat_ratings::created_at.eq(now),
                csat_ratings::updated_at.eq(now),
            ))
            .on_conflict(csat_ratings::conversation_id)
            .do_update()
            .set((
                csat_ratings::rating.eq(score),
                csat_ratings::comment.eq(&comment),
                csat_ratings::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        diesel::update(conversations::table.find(conversation_id))
            .set((
                conversations::rating.eq(score),
                conversations::rating_comment.eq(&comment),
            ))
            .execute(conn)
            .await?;
        super::conversations::get(conn, conversation_id)
            .await?
            .ok_or_else(|| AppError::not_found("conversation"))
    })
    .await
}

/// Average rating, number of ratings and how many of each score (index 0 = 1 star).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub average: Option<f64>,
    pub responses: i64,
    pub distribution: [i64; 5],
}

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = Nullable<Double>)]
    average: Option<f64>,
    #[diesel(sql_type = BigInt)]
    responses: i64,
    #[diesel(sql_type = BigInt)]
    s1: i64,
    #[diesel(sql_type = BigInt)]
    s2: i64,
    #[diesel(sql_type = BigInt)]
    s3: i64,
    #[diesel(sql_type = BigInt)]
    s4: i64,
    #[diesel(sql_type = BigInt)]
    s5: i64,
}

/// The ratings of one site (or all), optionally given in `[from, to)`.
pub async fn summary(
    conn: &mut AsyncPgConnection,
    site_id: Option<Uuid>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> AppResult<Summary> {
    let r: SummaryRow = diesel::sql_query(
        "SELECT avg(r.rating)::float8 AS average, count(*) AS responses, \
           count(*) FILTER (WHERE r.rating = 1) AS s1, count(*) FILTER (WHERE r.rating = 2) AS s2, \
           count(*) FILTER (WHERE r.rating = 3) AS s3, count(*) FILTER (WHERE r.rating = 4) AS s4, \
           count(*) FILTER (WHERE r.rating = 5) AS s5 \
         FROM csat_ratings r JOIN conversations c ON c.id = r.conversation_id \
         WHERE ($1::uuid IS NULL OR c.site_id = $1) \
           AND ($2::timestamptz IS NULL OR r.created_at >= $2) \
           AND ($3::timestamptz IS NULL OR r.created_at < $3)",
    )
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(site_id)
    .bind::<Nullable<diesel::sql_types::Timestamptz>, _>(from)
    .bind::<Nullable<diesel::sql_types::Timestamptz>, _>(to)
    .get_result(conn)
    .await?;
    Ok(Summary {
        average: r.average,
        responses: r.responses,
        distribution: [r.s1, r.s2, r.s3, r.s4, r.s5],
    })
}
