//! Queries on `agents`, `agent_sessions` (hashed bearer tokens) and `login_failures`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{agent_sessions, agents, login_failures};
use crate::error::{AppError, AppResult};
use crate::protocol::{Agent, AgentStatus, Role};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = agents)]
pub struct AgentRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub status: String,
    pub max_open: i32,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Agent {
        Agent {
            id: r.id,
            email: r.email,
            name: r.name,
            role: Role::parse(&r.role).unwrap_or(Role::Agent),
            status: AgentStatus::parse(&r.status).unwrap_or(AgentStatus::Offline),
            max_open: r.max_open,
            disabled: r.disabled,
            created_at: r.created_at,
        }
    }
}

/// Emails compare case-insensitively; they are stored lower-case.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub async fn count(conn: &mut AsyncPgConnection) -> AppResult<i64> {
    Ok(agents::table.count().get_result(conn).await?)
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    email: &str,
    name: &str,
    role: Role,
    password_hash: &str,
    max_open: i32,
) -> AppResult<Agent> {
    let row: AgentRow = diesel::insert_into(agents::table)
        .values((
            agents::id.eq(Uuid::new_v4()),
            agents::email.eq(normalize_email(email)),
            agents::name.eq(name.trim()),
            agents::role.eq(role.as_str()),
            agents::max_open.eq(max_open),
            agents::password_hash.eq(password_hash),
        ))
        .returning(AgentRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match AppError::from(e) {
            err if err.code == crate::error::ErrorCode::Conflict => {
                AppError::conflict("an agent with this email already exists")
            }
            err => err,
        })?;
    Ok(row.into())
}

/// The agent with this email and its password hash.
pub async fn by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> AppResult<Option<(Agent, String)>> {
    let row: Option<(AgentRow, String)> = agents::table
        .filter(agents::email.eq(normalize_email(email)))
        .select((AgentRow::as_select(), agents::password_hash))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(a, h)| (a.into(), h)))
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<Option<Agent>> {
    let row: Option<AgentRow> = agents::table
        .find(id)
        .select(AgentRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Agent::from))
}

pub async fn list(conn: &mut AsyncPgConnection) -> AppResult<Vec<Agent>> {
    let rows: Vec<AgentRow> = agents::table
        .select(AgentRow::as_select())
        .order((agents::created_at.asc(), agents::id.asc()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Agent::from).collect())
}

#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = agents)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub role: Option<String>,
    pub max_open: Option<i32>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
    pub status: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    mut patch: AgentPatch,
) -> AppResult<Option<Agent>> {
    patch.updated_at = Some(Utc::now());
    let row: Option<AgentRow> = diesel::update(agents::table.find(id))
        .set(&patch)
        .returning(AgentRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    Ok(row.map(Agent::from))
}

/// Sets the status and marks the agent seen now.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: AgentStatus,
) -> AppResult<Agent> {
    let now = Utc::now();
    let row: AgentRow = diesel::update(agents::table.find(id))
        .set((
            agents::status.eq(status.as_str()),
            agents::last_seen_at.eq(now),
            agents::updated_at.eq(now),
        ))
        .returning(AgentRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

/// Marks the agent seen now unless it was seen within `min_gap` (saves writes).
/// Returns true when the agent went from unseen-for-a-while to seen.
pub async fn touch_seen(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    min_gap: chrono::Duration,
) -> AppResult<bool> {
    let now = Utc::now();
    let n = diesel::update(
        agents::table.find(id).filter(
            agents::last_seen_at
                .is_null()
                .or(agents::last_seen_at.lt(now - min_gap)),
        ),
    )
    .set(agents::last_seen_at.eq(now))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Number of agents available for assignment (online and seen within `window`).
pub async fn count_available(
    conn: &mut AsyncPgConnection,
    window: chrono::Duration,
) -> AppResult<i64> {
    Ok(agents::table
        .filter(agents::status.eq("online"))
        .filter(agents::disabled.eq(false))
        .filter(agents::last_seen_at.gt(Utc::now() - window))
        .count()
        .get_result(conn)
        .await?)
}

// --- sessions ----------------------------------------------------------------------------

pub async fn create_session(
    conn: &mut AsyncPgConnection,
    agent_id: Uuid,
    token_hash: &[u8],
) -> AppResult<()> {
    diesel::insert_into(agent_sessions::table)
        .values((
            agent_sessions::token_hash.eq(token_hash),
            agent_sessions::agent_id.eq(agent_id),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The agent owning a token that was used within `idle`; refreshes `last_used_at` when it
/// is older than a minute. Disabled agents have no valid token.
pub async fn session_agent(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    idle: chrono::Duration,
) -> AppResult<Option<Agent>> {
    let now = Utc::now();
    let found: Option<(AgentRow, DateTime<Utc>)> = agent_sessions::table
        .inner_join(agents::table)
        .filter(agent_sessions::token_hash.eq(token_hash))
        .filter(agent_sessions::last_used_at.gt(now - idle))
        .filter(agents::disabled.eq(false))
        .select((AgentRow::as_select(), agent_sessions::last_used_at))
        .first(conn)
        .await
        .optional()?;
    let Some((agent, last_used)) = found else {
        return Ok(None);
    };
    if last_used < now - chrono::Duration::seconds(60) {
        diesel::update(agent_sessions::table.find(token_hash))
            .set(agent_sessions::last_used_at.eq(now))
            .execute(conn)
            .await?;
    }
    Ok(Some(agent.into()))
}

pub async fn delete_session(conn: &mut AsyncPgConnection, token_hash: &[u8]) -> AppResult<bool> {
    let n = diesel::delete(agent_sessions::table.find(token_hash))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Ends every session of an agent (disabled or removed); returns how many.
pub async fn delete_sessions_of(conn: &mut AsyncPgConnection, agent_id: Uuid) -> AppResult<usize> {
    Ok(
        diesel::delete(agent_sessions::table.filter(agent_sessions::agent_id.eq(agent_id)))
            .execute(conn)
            .await?,
    )
}

// --- login throttling --------------------------------------------------------------------

pub async fn recent_failures(
    conn: &mut AsyncPgConnection,
    email: &str,
    window: chrono::Duration,
) -> AppResult<i64> {
    Ok(login_failures::table
        .filter(login_failures::email.eq(normalize_email(email)))
        .filter(login_failures::failed_at.gt(Utc::now() - window))
        .count()
        .get_result(conn)
        .await?)
}

pub async fn record_failure(conn: &mut AsyncPgConnection, email: &str) -> AppResult<()> {
    diesel::insert_into(login_failures::table)
        .values(login_failures::email.eq(normalize_email(email)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn clear_failures(conn: &mut AsyncPgConnection, email: &str) -> AppResult<()> {
    diesel::delete(login_failures::table.filter(login_failures::email.eq(normalize_email(email))))
        .execute(conn)
        .await?;
    Ok(())
}
