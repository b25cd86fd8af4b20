//! Queries on `conversations`: lifecycle, inbox views, and the assignment queue.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::events::{self, NewEvent};
use super::schema::{agents, conversations};
use crate::domain::assignment::{self, Candidate};
use crate::error::{AppError, AppResult};
use crate::protocol::{Assignee, Conversation, ConversationStatus};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub visitor_id: Uuid,
    pub status: String,
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub rating: Option<i16>,
    pub rating_comment: Option<String>,
}

type WithAssignee = (ConversationRow, Option<(Uuid, String)>);

fn to_dto((r, a): WithAssignee) -> Conversation {
    Conversation {
        id: r.id,
        site_id: r.site_id,
        visitor_id: r.visitor_id,
        assignee: a.map(|(id, name)| Assignee { id, name }),
        status: ConversationStatus::parse(&r.status).unwrap_or(ConversationStatus::Pending),
        last_seq: r.last_seq,
        created_at: r.created_at,
        updated_at: r.updated_at,
        first_response_at: r.first_response_at,
        resolved_at: r.resolved_at,
        rating: r.rating,
        rating_comment: r.rating_comment,
        labels: None,
    }
}

macro_rules! with_assignee {
    () => {
        conversations::table.left_join(agents::table).select((
            ConversationRow::as_select(),
            (agents::id, agents::name).nullable(),
        ))
    };
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Conversation>> {
    let row: Option<WithAssignee> = with_assignee!()
        .filter(conversations::id.eq(id))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(to_dto))
}

/// The conversation's `last_seq`, `None` when it does not exist.
pub async fn last_seq(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<i64>> {
    Ok(conversations::table
        .find(id)
        .select(conversations::last_seq)
        .first(conn)
        .await
        .optional()?)
}

pub async fn get_many(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> AppResult<Vec<Conversation>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<WithAssignee> = with_assignee!()
        .filter(conversations::id.eq_any(ids))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(to_dto).collect())
}

/// The visitor's most recent conversation, whatever its status.
pub async fn latest_for_visitor(
    conn: &mut AsyncPgConnection,
    visitor_id: Uuid,
) -> AppResult<Option<Conversation>> {
    let row: Option<WithAssignee> = with_assignee!()
        .filter(conversations::visitor_id.eq(visitor_id))
        .order((conversations::created_at.desc(), conversations::id.desc()))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(to_dto))
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    visitor_id: Uuid,
) -> AppResult<Conversation> {
    conn.transaction(async |conn| {
        let id = Uuid::new_v4();
        diesel::insert_into(conversations::table)
            .values((
                conversations::id.eq(id),
                conversations::site_id.eq(site_id),
                conversations::visitor_id.eq(visitor_id),
            ))
            .execute(conn)
            .await?;
        let conv = get(conn, id)
            .await?
            .ok_or_else(|| AppError::internal("conversation vanished after insert"))?;
        record(conn, events::CONVERSATION_CREATED, &conv).await?;
        Ok(conv)
    })
    .await
}

/// Writes the conversation's event to the durable stream (inside the caller's transaction).
async fn record(
    conn: &mut AsyncPgConnection,
    kind: &'static str,
    conv: &Conversation,
) -> AppResult<()> {
    events::insert(conn, &[NewEvent::conversation(kind, conv)]).await
}

/// After an UPDATE of conversation `id` that touched `changed` rows: reads it back and
/// writes its event. Call inside the UPDATE's transaction.
async fn record_if_changed(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    kind: &'static str,
    changed: usize,
) -> AppResult<Option<Conversation>> {
    if changed == 0 {
        return Ok(None);
    }
    let Some(conv) = get(conn, id).await? else {
        return Ok(None);
    };
    record(conn, kind, &conv).await?;
    Ok(Some(conv))
}

/// Which conversations an inbox view shows by assignee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AssigneeFilter {
    Any,
    Unassigned,
    Agent(Uuid),
}

/// Keyset position: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.updated_at.timestamp_micros(),
            self.id.simple()
        )
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let (micros, id) = s.split_once('_')?;
        let updated_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor {
            updated_at,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// An inbox page, newest activity first; the second value is the next page's cursor.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<ConversationStatus>,
    assignee: AssigneeFilter,
    label: Option<Uuid>,
    limit: i64,
    cursor: Option<Cursor>,
) -> AppResult<(Vec<Conversation>, Option<Cursor>)> {
    let mut q = with_assignee!().into_boxed();
    if let Some(l) = label {
        use super::schema::conversation_labels as cl;
        q = q.filter(
            conversations::id.eq_any(
                cl::table
                    .filter(cl::label_id.eq(l))
                    .select(cl::conversation_id),
            ),
        );
    }
    if let Some(s) = status {
        q = q.filter(conversations::status.eq(s.as_str()));
    }
    match assignee {
        AssigneeFilter::Any => {}
        AssigneeFilter::Unassigned => q = q.filter(conversations::assignee_id.is_null()),
        AssigneeFilter::Agent(id) => q = q.filter(conversations::assignee_id.eq(id)),
    }
    if let Some(c) = cursor {
        // The plain `updated_at <=` bound is implied by the exact keyset condition after it;
        // it is there because PostgreSQL can start the index scan at it, whereas it can only
        // filter with the OR (a deep page would otherwise read every row above it).
        q = q.filter(conversations::updated_at.le(c.updated_at)).filter(
            conversations::updated_at
                .lt(c.updated_at)
                .or(conversations::updated_at
                    .eq(c.updated_at)
                    .and(conversations::id.lt(c.id))),
        );
    }
    let rows: Vec<WithAssignee> = q
        .order((conversations::updated_at.desc(), conversations::id.desc()))
        .limit(limit + 1)
        .load(conn)
        .await?;
    let mut items: Vec<Conversation> = rows.into_iter().map(to_dto).collect();
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|c| Cursor {
            updated_at: c.updated_at,
            id: c.id,
        })
    } else {
        None
    };
    Ok((items, next))
}

/// Claim, transfer or unassign. Assigned conversations are `open`; unassigning puts a
/// conversation that is not resolved back in the queue.
pub async fn set_assignee(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    agent_id: Option<Uuid>,
) -> AppResult<Option<Conversation>> {
    let now = Utc::now();
    conn.transaction(async |conn| {
        let changed = match agent_id {
            Some(a) => {
                diesel::update(conversations::table.find(id))
                    .set((
                        conversations::assignee_id.eq(a),
                        conversations::status.eq(diesel::dsl::sql::<diesel::sql_types::Text>(
                            "CASE WHEN status = 'resolved' THEN 'resolved' ELSE 'open' END",
                        )),
                        conversations::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?
            }
            None => {
                diesel::update(conversations::table.find(id))
                    .set((
                        conversations::assignee_id.eq(None::<Uuid>),
                        conversations::status.eq(diesel::dsl::sql::<diesel::sql_types::Text>(
                            "CASE WHEN status = 'resolved' THEN 'resolved' ELSE 'pending' END",
                        )),
                        conversations::queued_at.eq(now),
                        conversations::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?
            }
        };
        record_if_changed(conn, id, events::CONVERSATION_UPDATED, changed).await
    })
    .await
}

pub async fn resolve(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Conversation>> {
    let now = Utc::now();
    conn.transaction(async |conn| {
        let changed = diesel::update(conversations::table.find(id))
            .set((
                conversations::status.eq("resolved"),
                conversations::resolved_at.eq(now),
                conversations::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        record_if_changed(conn, id, events::CONVERSATION_RESOLVED, changed).await
    })
    .await
}

/// Resolves the conversation only if it is still unresolved and idle since `idle_before`
/// (auto-resolve: a message that arrived meanwhile keeps it open). Answers it when resolved.
pub async fn resolve_if_idle(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    idle_before: DateTime<Utc>,
) -> AppResult<Option<Conversation>> {
    let now = Utc::now();
    conn.transaction(async |conn| {
        let changed = diesel::update(
            conversations::table
                .find(id)
                .filter(conversations::status.ne("resolved"))
                .filter(conversations::updated_at.lt(idle_before)),
        )
        .set((
            conversations::status.eq("resolved"),
            conversations::resolved_at.eq(now),
            conversations::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
        record_if_changed(conn, id, events::CONVERSATION_RESOLVED, changed).await
    })
    .await
}

/// Reopens: `open` with its assignee, or back to the queue without one.
pub async fn reopen(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Conversation>> {
    let now = Utc::now();
    conn.transaction(async |conn| {
        let changed = diesel::update(conversations::table.find(id))
            .set((
                conversations::status.eq(diesel::dsl::sql::<diesel::sql_types::Text>(
                    "CASE WHEN assignee_id IS NULL THEN 'pending' ELSE 'open' END",
                )),
                conversations::resolved_at.eq(None::<DateTime<Utc>>),
                conversations::queued_at.eq(now),
                conversations::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        record_if_changed(conn, id, events::CONVERSATION_UPDATED, changed).await
    })
    .await
}

// --- assignment ---------------------------------------------------------------------------

#[derive(QueryableByName)]
struct CandidateRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = BigInt)]
    open: i64,
    #[diesel(sql_type = BigInt)]
    max_open: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_assigned_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
struct WaitingRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    queued_at: DateTime<Utc>,
}

/// Assigns waiting conversations, oldest first, to available agents with capacity.
///
/// Safe when several nodes run it at once: available agents are row-locked for the
/// transaction, so assigners run one at a time and count loads once; waiting
/// conversations are then locked too (`FOR UPDATE` waits for a message commit in flight
/// rather than skipping the row, and re-checks that the row is still waiting), so one is
/// never handed out twice. Returns the assigned ids.
///
/// Conversations of `closed_sites` (outside their business hours) stay in the queue;
/// agents may still claim them by hand.
pub async fn assign_waiting(
    conn: &mut AsyncPgConnection,
    available_within_secs: i64,
    closed_sites: &[Uuid],
) -> AppResult<Vec<Uuid>> {
    conn.transaction(async |conn| {
        // Lock the available agents first, in a statement of its own: under READ
        // COMMITTED each statement sees what was committed before it started, so the loads
        // counted next include whatever a racing assigner committed while we waited.
        let locked: Vec<IdRow> = diesel::sql_query(
            "SELECT a.id FROM agents a \
             WHERE a.status = 'online' AND NOT a.disabled \
               AND a.last_seen_at > now() - make_interval(secs => $1) \
             ORDER BY a.id FOR UPDATE",
        )
        .bind::<Double, _>(available_within_secs as f64)
        .load(conn)
        .await?;
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = locked.into_iter().map(|r| r.id).collect();
        let mut candidates: Vec<Candidate> = diesel::sql_query(
            "SELECT a.id, a.max_open::int8 AS max_open, a.last_assigned_at, \
               (SELECT count(*) FROM conversations c \
                 WHERE c.assignee_id = a.id AND c.status = 'open') AS open \
             FROM agents a WHERE a.id = ANY($1) ORDER BY a.id",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&ids)
        .load::<CandidateRow>(conn)
        .await?
        .into_iter()
        .map(|r| Candidate {
            id: r.id,
            open: r.open,
            max_open: r.max_open,
            last_assigned_at: r.last_assigned_at,
        })
        .collect();
        let spare: i64 = candidates
            .iter()
            .map(|c| (c.max_open - c.open).max(0))
            .sum();
        if spare == 0 {
            return Ok(Vec::new());
        }
        // The oldest waiting ones, locked in id order — the order the message writer locks
        // conversations in. Locking them oldest first instead deadlocked with a writer
        // batch holding two of them (PostgreSQL aborted one side: `internal` errors for
        // its senders). The status test is repeated on the locked rows: one assigned or
        // resolved meanwhile is left out.
        let mut waiting: Vec<WaitingRow> = diesel::sql_query(
            "SELECT id, queued_at FROM conversations \
             WHERE status = 'pending' AND assignee_id IS NULL AND id IN ( \
               SELECT id FROM conversations \
               WHERE status = 'pending' AND assignee_id IS NULL AND site_id <> ALL($2) \
               ORDER BY queued_at, id LIMIT $1) \
             ORDER BY id FOR UPDATE",
        )
        .bind::<BigInt, _>(spare)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(closed_sites)
        .load(conn)
        .await?;
        waiting.sort_by_key(|w| (w.queued_at, w.id));
        let now = Utc::now();
        let picks = assignment::plan(&mut candidates, waiting.len(), now);
        let mut assigned = Vec::with_capacity(picks.len());
        for (conv, idx) in waiting.iter().zip(picks) {
            let agent = &candidates[idx];
            diesel::update(conversations::table.find(conv.id))
                .set((
                    conversations::assignee_id.eq(agent.id),
                    conversations::status.eq("open"),
                    conversations::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            diesel::update(agents::table.find(agent.id))
                .set(agents::last_assigned_at.eq(agent.last_assigned_at))
                .execute(conn)
                .await?;
            assigned.push(conv.id);
        }
        let convs = get_many(conn, &assigned).await?;
        let evs: Vec<NewEvent> = convs
            .iter()
            .map(|c| NewEvent::conversation(events::CONVERSATION_UPDATED, c))
            .collect();
        events::insert(conn, &evs).await?;
        Ok::<_, AppError>(assigned)
    })
    .await
}

pub async fn queue_length(conn: &mut AsyncPgConnection) -> AppResult<i64> {
    Ok(conversations::table
        .filter(conversations::status.eq("pending"))
        .filter(conversations::assignee_id.is_null())
        .count()
        .get_result(conn)
        .await?)
}

// --- stats ---------------------------------------------------------------------------------

#[derive(Debug, Clone, serde::Serialize, QueryableByName)]
pub struct Stats {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub open: i64,
    #[diesel(sql_type = BigInt)]
    pub resolved: i64,
    #[diesel(sql_type = BigInt)]
    pub queue_length: i64,
    #[diesel(sql_type = BigInt)]
    pub agents_online: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub median_first_response_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub median_resolution_seconds: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub average_rating: Option<f64>,
}

pub async fn stats(conn: &mut AsyncPgConnection, available_within_secs: i64) -> AppResult<Stats> {
    Ok(diesel::sql_query(
        "SELECT \
           count(*) FILTER (WHERE status = 'pending') AS pending, \
           count(*) FILTER (WHERE status = 'open') AS open, \
           count(*) FILTER (WHERE status = 'resolved') AS resolved, \
           count(*) FILTER (WHERE status = 'pending' AND assignee_id IS NULL) AS queue_length, \
           (SELECT count(*) FROM agents a WHERE a.status = 'online' AND NOT a.disabled \
              AND a.last_seen_at > now() - make_interval(secs => $1)) AS agents_online, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_response_at - created_at)) \
              FILTER (WHERE first_response_at IS NOT NULL) AS median_first_response_seconds, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at)) \
              FILTER (WHERE resolved_at IS NOT NULL) AS median_resolution_seconds, \
           (SELECT avg(rating)::float8 FROM csat_ratings) AS average_rating \
         FROM conversations",
    )
    .bind::<Double, _>(available_within_secs as f64)
    .get_result(conn)
    .await?)
}

/// The visitor's current conversation, created if it has none. The visitor row is locked
/// so two tabs sending their first message at once end up in one conversation.
/// Returns the conversation and whether it was created now.
pub async fn get_or_create(
    conn: &mut AsyncPgConnection,
    site_id: Uuid,
    visitor_id: Uuid,
) -> AppResult<(Conversation, bool)> {
    use super::schema::visitors;
    conn.transaction(async |conn| {
        let found: Option<Uuid> = visitors::table
            .find(visitor_id)
            .select(visitors::id)
            .for_update()
            .first(conn)
            .await
            .optional()?;
        if found.is_none() {
            return Err(AppError::not_found("visitor"));
        }
        if let Some(c) = latest_for_visitor(conn, visitor_id).await? {
            return Ok((c, false));
        }
        Ok((create(conn, site_id, visitor_id).await?, true))
    })
    .await
}

/// Opens a conversation for an agent greeting a visitor first: a new one assigned to the
/// agent (`open`), or the visitor's resolved one reopened and assigned to the agent.
/// `conflict` when the visitor is already in a pending or open conversation. The visitor
/// row is locked, so a greeting and the visitor's own first message never make two
/// conversations. Answers the conversation and whether it was created now.
pub async fn open_for_greeting(
    conn: &mut AsyncPgConnection,
    visitor_id: Uuid,
    agent_id: Uuid,
) -> AppResult<(Conversation, bool)> {
    use super::schema::visitors;
    conn.transaction(async |conn| {
        let site_id: Uuid = visitors::table
            .find(visitor_id)
            .select(visitors::site_id)
            .for_update()
            .first(conn)
            .await
            .optional()?
            .ok_or_else(|| AppError::not_found("visitor"))?;
        let now = Utc::now();
        match latest_for_visitor(conn, visitor_id).await? {
            Some(c) if c.status != ConversationStatus::Resolved => Err(AppError::conflict(
                "the visitor is already in a conversation; reply there",
            )),
            Some(c) => {
                diesel::update(conversations::table.find(c.id))
                    .set((
                        conversations::assignee_id.eq(agent_id),
                        conversations::status.eq("open"),
                        conversations::resolved_at.eq(None::<DateTime<Utc>>),
                        conversations::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                let c = get(conn, c.id)
                    .await?
                    .ok_or_else(|| AppError::internal("conversation vanished"))?;
                Ok((c, false))
            }
            None => {
                let id = Uuid::new_v4();
                diesel::insert_into(conversations::table)
                    .values((
                        conversations::id.eq(id),
                        conversations::site_id.eq(site_id),
                        conversations::visitor_id.eq(visitor_id),
                        conversations::assignee_id.eq(agent_id),
                        conversations::status.eq("open"),
                    ))
                    .execute(conn)
                    .await?;
                let c = get(conn, id)
                    .await?
                    .ok_or_else(|| AppError::internal("conversation vanished after insert"))?;
                Ok((c, true))
            }
        }
    })
    .await
}

/// The latest conversation of each of `visitor_ids` (for the online visitors list).
pub async fn latest_for_visitors(
    conn: &mut AsyncPgConnection,
    visitor_ids: &[Uuid],
) -> AppResult<Vec<Conversation>> {
    if visitor_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<WithAssignee> = with_assignee!()
        .filter(conversations::visitor_id.eq_any(visitor_ids))
        .distinct_on(conversations::visitor_id)
        .order((
            conversations::visitor_id,
            conversations::created_at.desc(),
            conversations::id.desc(),
        ))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(to_dto).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = Cursor {
            updated_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("ts"),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("12_notauuid"), None);
    }
}
