//! Visitors online now: who is on the site (over a WebSocket or long-polling), on which
//! page, since when — the agents' "online now" list, from which an agent greets a visitor
//! first.
//!
//! Each node tracks its own connections in a [`Presence`] registry (held by the bus, which
//! also uses it to hand a conversation created for a visitor — by an agent's greeting — to
//! the visitor's open sessions). With Redis, every node writes its visitors to its own hash
//! `<prefix>:presence:node:<node_id>` (visitor → record) as they come, go and move, and
//! every [`REFRESH`] renews that hash's expiry and its entry in the sorted set
//! `<prefix>:presence:nodes` (node → expiry) — two commands per node, whatever the number
//! of visitors. Any node lists everybody from the live nodes' hashes; a node that dies
//! drops out after [`TTL`]. Without Redis a node lists its own visitors.
//!
//! Agents hear of changes live, batched per node each tick (≤ 1 s): `visitor.online
//! {visitors:[…]}` when visitors arrive or move to another page, `visitor.offline
//! {visitor_ids:[…]}` when a visitor's last connection on any node has been closed for
//! `KEFU_PRESENCE_GRACE_SECS` (8 s; going from page to page reconnects within it, so it
//! does not flicker). Batching keeps a crowd arriving from flooding agents' sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::bus::Event;
use crate::error::AppResult;
use crate::protocol::{Conversation, Site, Visitor};
use crate::state::AppState;

/// How often a node rewrites its visitors in Redis.
pub const REFRESH: Duration = Duration::from_secs(10);
/// A node's records expire this long after their last refresh (the node died).
pub const TTL: Duration = Duration::from_secs(35);
/// How often connected visitors are marked seen in PostgreSQL (their visit goes on).
const SEEN_EVERY: Duration = Duration::from_secs(60);
/// Longest page URL, title or referrer kept in the list.
const MAX_FIELD: usize = 1000;

/// One visitor online now, as agents see it (`GET /api/visitors/online`, `visitor.online`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineVisitor {
    /// The visitor's id.
    pub id: Uuid,
    pub site_id: Uuid,
    pub site_name: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub page_url: Option<String>,
    pub page_title: Option<String>,
    pub referrer: Option<String>,
    /// When this visit began: time on site is `now - visit_started_at`.
    pub visit_started_at: DateTime<Utc>,
    /// Last change (arrival, page, name).
    pub updated_at: DateTime<Utc>,
    /// The visitor's latest conversation (filled in by the HTTP list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
}

fn attribute(v: &Visitor, key: &str) -> Option<String> {
    v.attributes
        .get(key)
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(MAX_FIELD).collect())
}

impl OnlineVisitor {
    pub fn new(site: &Site, v: &Visitor) -> OnlineVisitor {
        OnlineVisitor {
            id: v.id,
            site_id: site.id,
            site_name: site.name.clone(),
            name: v.name.clone(),
            email: v.email.clone(),
            page_url: attribute(v, "page_url"),
            page_title: attribute(v, "page_title"),
            referrer: attribute(v, "referrer"),
            // Until PostgreSQL says when the visit began (a moment later).
            visit_started_at: Utc::now(),
            updated_at: Utc::now(),
            conversation: None,
        }
    }

    /// Takes what a profile update changed; true when an agent would see a difference.
    fn absorb(&mut self, v: &Visitor) -> bool {
        let (name, email) = (v.name.clone(), v.email.clone());
        let (page_url, page_title, referrer) = (
            attribute(v, "page_url"),
            attribute(v, "page_title"),
            attribute(v, "referrer"),
        );
        let changed = name != self.name
            || email != self.email
            || page_url != self.page_url
            || page_title != self.page_title
            || referrer != self.referrer;
        if changed {
            self.name = name;
            self.email = email;
            self.page_url = page_url;
            self.page_title = page_title;
            self.referrer = referrer;
            self.updated_at = Utc::now();
        }
        changed
    }

    /// The same visitor seen on another node: earliest visit start, latest page.
    fn merge(&mut self, other: OnlineVisitor) {
        let started = self.visit_started_at.min(other.visit_started_at);
        if other.updated_at > self.updated_at {
            *self = other;
        }
        self.visit_started_at = started;
    }
}

/// A conversation was created for this visitor (an agent greeted first, or another tab sent
/// the first message): the session takes it up — joins its room, shows its messages.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptConversation(pub Box<Conversation>);

/// How a visitor is connected to this node.
#[derive(Clone)]
pub enum Link {
    Socket(Recipient<AdoptConversation>),
    /// A long-poll waiting for the visitor's first conversation.
    Poll(Arc<Notify>),
}

struct Entry {
    record: OnlineVisitor,
    links: HashMap<u64, Link>,
    /// When the last link closed.
    left_at: Option<Instant>,
    /// Agents and Redis have not heard of the latest record yet.
    changed: bool,
    /// The visit's start is still to be read from PostgreSQL.
    unstarted: bool,
}

/// The visitors connected to this node. Cheap to clone.
#[derive(Clone, Default)]
pub struct Presence {
    inner: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl Presence {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Entry>) -> T) -> T {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut map)
    }

    /// A connection of the visitor opened; true when the visitor was not online here (it is
    /// announced with the next tick). `started` is the visit's start when already known.
    pub fn join(
        &self,
        mut record: OnlineVisitor,
        started: Option<DateTime<Utc>>,
        link_id: u64,
        link: Link,
    ) -> bool {
        if let Some(at) = started {
            record.visit_started_at = at;
        }
        self.with(|map| match map.get_mut(&record.id) {
            Some(e) => {
                e.links.insert(link_id, link);
                e.left_at = None;
                false
            }
            None => {
                let id = record.id;
                let mut links = HashMap::new();
                links.insert(link_id, link);
                map.insert(
                    id,
                    Entry {
                        record,
                        links,
                        left_at: None,
                        changed: true,
                        unstarted: started.is_none(),
                    },
                );
                true
            }
        })
    }

    /// A connection closed; the visitor stays listed for the grace period.
    pub fn leave(&self, visitor_id: Uuid, link_id: u64) {
        self.with(|map| {
            if let Some(e) = map.get_mut(&visitor_id) {
                e.links.remove(&link_id);
                if e.links.is_empty() {
                    e.left_at = Some(Instant::now());
                }
            }
        })
    }

    /// A profile update; true when agents would see a change (announced with the next
    /// tick).
    pub fn update(&self, v: &Visitor) -> bool {
        self.with(|map| {
            let Some(e) = map.get_mut(&v.id) else {
                return false;
            };
            let changed = e.record.absorb(v);
            e.changed |= changed;
            changed
        })
    }

    /// Visitors whose visit start is still to be read (flag cleared).
    fn take_unstarted(&self) -> Vec<Uuid> {
        self.with(|map| {
            map.iter_mut()
                .filter(|(_, e)| e.unstarted)
                .map(|(id, e)| {
                    e.unstarted = false;
                    *id
                })
                .collect()
        })
    }

    fn set_visit_started(&self, id: Uuid, at: DateTime<Utc>) {
        self.with(|map| {
            if let Some(e) = map.get_mut(&id) {
                e.record.visit_started_at = at;
            }
        })
    }

    /// Records agents have not heard of yet (flag cleared).
    fn take_changed(&self) -> Vec<OnlineVisitor> {
        self.with(|map| {
            map.values_mut()
                .filter(|e| e.changed)
                .map(|e| {
                    e.changed = false;
                    e.record.clone()
                })
                .collect()
        })
    }

    /// Hands a conversation created for a visitor to its connections on this node.
    pub fn adopt(&self, conversation: &Conversation) {
        self.with(|map| {
            if let Some(e) = map.get(&conversation.visitor_id) {
                for link in e.links.values() {
                    match link {
                        Link::Socket(r) => {
                            r.do_send(AdoptConversation(Box::new(conversation.clone())))
                        }
                        Link::Poll(n) => n.notify_waiters(),
                    }
                }
            }
        })
    }

    pub fn get(&self, id: Uuid) -> Option<OnlineVisitor> {
        self.with(|map| map.get(&id).map(|e| e.record.clone()))
    }

    /// Every visitor listed by this node.
    pub fn all(&self) -> Vec<OnlineVisitor> {
        self.with(|map| map.values().map(|e| e.record.clone()).collect())
    }

    /// Removes the visitors whose last link closed `grace` ago; answers their ids.
    fn expire(&self, grace: Duration) -> Vec<Uuid> {
        self.with(|map| {
            let gone: Vec<Uuid> = map
                .iter()
                .filter(|(_, e)| {
                    e.links.is_empty() && e.left_at.is_some_and(|t| t.elapsed() >= grace)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in &gone {
                map.remove(id);
            }
            gone
        })
    }

    pub fn len(&self) -> usize {
        self.with(|map| map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------
// The node's side: PostgreSQL for the visit start, Redis for the shared list, the bus for
// live updates.
// ---------------------------------------------------------------------------------------

fn nodes_key(state: &AppState) -> String {
    format!("{}:presence:nodes", state.settings.redis_prefix)
}

fn node_key(state: &AppState, node: &str) -> String {
    format!("{}:presence:node:{node}", state.settings.redis_prefix)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Writes records of this node to its hash (one round trip per chunk).
async fn store(state: &AppState, records: &[OnlineVisitor]) {
    let Some(redis) = &state.redis else { return };
    let key = node_key(state, &state.node_id);
    for chunk in records.chunks(500) {
        let mut pipe = redis::pipe();
        for r in chunk {
            let Ok(json) = serde_json::to_string(r) else {
                continue;
            };
            pipe.cmd("HSET")
                .arg(&key)
                .arg(r.id.to_string())
                .arg(json)
                .ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(TTL.as_millis() as i64)
            .ignore();
        let _: Option<()> = redis.query_pipe("presence_store", &pipe).await;
    }
}

/// Keeps this node's hash alive; rewrites it whole when Redis lost it (restarted,
/// flushed, or this node could not refresh in time).
async fn refresh(state: &AppState) {
    let Some(redis) = &state.redis else { return };
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(nodes_key(state))
        .arg(now_ms() + TTL.as_millis() as i64)
        .arg(&state.node_id)
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(node_key(state, &state.node_id))
        .arg(TTL.as_millis() as i64);
    if let Some((0,)) = redis.query_pipe::<(i64,)>("presence_refresh", &pipe).await {
        store(state, &state.bus.presence.all()).await;
    }
}

/// The nodes whose records are current.
async fn live_nodes(state: &AppState) -> Option<Vec<String>> {
    let redis = state.redis.as_ref()?;
    let mut pipe = redis::pipe();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(nodes_key(state))
        .arg("-inf")
        .arg(now_ms())
        .ignore();
    pipe.cmd("ZRANGE").arg(nodes_key(state)).arg(0).arg(-1);
    redis
        .query_pipe::<(Vec<String>,)>("presence_nodes", &pipe)
        .await
        .map(|(nodes,)| nodes)
}

/// Whether another node has the visitor.
async fn elsewhere(state: &AppState, id: Uuid) -> bool {
    let (Some(redis), Some(nodes)) = (&state.redis, live_nodes(state).await) else {
        return false;
    };
    let others: Vec<&String> = nodes.iter().filter(|n| **n != state.node_id).collect();
    if others.is_empty() {
        return false;
    }
    let mut pipe = redis::pipe();
    for n in &others {
        pipe.cmd("HEXISTS")
            .arg(node_key(state, n))
            .arg(id.to_string());
    }
    redis
        .query_pipe::<Vec<bool>>("presence_elsewhere", &pipe)
        .await
        .is_some_and(|found| found.into_iter().any(|b| b))
}

/// Drops this node's records of visitors; `false` when Redis could not be told (try again
/// later, or the visitors would stay listed while this node lives).
async fn forget(state: &AppState, ids: &[Uuid]) -> bool {
    let Some(redis) = &state.redis else {
        return true;
    };
    if ids.is_empty() {
        return true;
    }
    let mut cmd = redis::cmd("HDEL");
    cmd.arg(node_key(state, &state.node_id));
    for id in ids {
        cmd.arg(id.to_string());
    }
    redis.query::<i64>("presence_forget", &cmd).await.is_some()
}

/// A visitor's connection (a socket, or a long-poll) opened on this node. Agents hear of
/// it with the next tick (batched).
pub fn connected(state: &AppState, site: &Site, visitor: &Visitor, link_id: u64, link: Link) {
    // A visitor created moments ago starts its first visit now: no need to ask PostgreSQL.
    let fresh =
        Utc::now().signed_duration_since(visitor.created_at) < chrono::Duration::seconds(60);
    state.bus.presence.join(
        OnlineVisitor::new(site, visitor),
        fresh.then_some(visitor.created_at),
        link_id,
        link,
    );
}

/// A visitor's connection closed.
pub fn disconnected(state: &AppState, visitor_id: Uuid, link_id: u64) {
    state.bus.presence.leave(visitor_id, link_id);
}

/// The visitor's profile changed (another page, a name): agents hear of it with the next
/// tick.
pub fn profile_changed(state: &AppState, visitor: &Visitor) {
    state.bus.presence.update(visitor);
}

/// Most records in one `visitor.online` frame.
const BATCH: usize = 200;

/// One tick's news: visit starts read, new and changed records stored and announced.
async fn announce(state: &AppState) {
    let unstarted = state.bus.presence.take_unstarted();
    if !unstarted.is_empty() {
        match state
            .db
            .run(async |conn| crate::db::visitors::visit_started_many(conn, &unstarted).await)
            .await
        {
            Ok(rows) => {
                for (id, at) in rows {
                    state.bus.presence.set_visit_started(id, at);
                }
            }
            Err(e) => log::debug!("presence: cannot read visit starts: {e}"),
        }
    }
    let changed = state.bus.presence.take_changed();
    if changed.is_empty() {
        return;
    }
    store(state, &changed).await;
    for chunk in changed.chunks(BATCH) {
        state.bus.publish(Event::VisitorsOnline {
            visitors: chunk.to_vec(),
        });
    }
}

/// Expires visitors who left, keeps this node's records alive in Redis, and marks
/// connected visitors seen. Runs for the life of the node.
pub fn spawn_upkeep(state: &AppState) {
    let state = state.clone();
    actix_web::rt::spawn(async move {
        let mut last_refresh: Option<Instant> = None;
        let mut last_seen = Instant::now();
        let mut unforgotten: Vec<Uuid> = Vec::new();
        let grace = Duration::from_secs(state.settings.presence_grace_secs);
        let tick = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH) {
                last_refresh = Some(Instant::now());
                refresh(&state).await;
            }
            tokio::time::sleep(tick).await;
            announce(&state).await;
            // (A visitor back here meanwhile has a fresh record: keep it.)
            unforgotten.retain(|id| state.bus.presence.get(*id).is_none());
            if forget(&state, &unforgotten).await {
                unforgotten.clear();
            }
            let gone = state.bus.presence.expire(grace);
            if !forget(&state, &gone).await {
                unforgotten.extend(&gone);
            }
            let mut offline = Vec::new();
            for id in gone {
                // Still on another node (a tab there, or the next page loaded there)?
                if !elsewhere(&state, id).await {
                    offline.push(id);
                }
            }
            for chunk in offline.chunks(BATCH) {
                state.bus.publish(Event::VisitorsOffline {
                    visitor_ids: chunk.to_vec(),
                });
            }
            if last_seen.elapsed() >= SEEN_EVERY {
                last_seen = Instant::now();
                let ids: Vec<Uuid> = state.bus.presence.all().iter().map(|r| r.id).collect();
                if let Err(e) = state
                    .db
                    .run(async |conn| crate::db::visitors::touch_seen(conn, &ids).await)
                    .await
                {
                    log::debug!("presence: cannot mark visitors seen: {e}");
                }
            }
        }
    });
}

/// Everybody online on any node (this node's own list when Redis is off or down), most
/// recent arrivals first, at most `limit`.
pub async fn list(state: &AppState, limit: usize) -> Vec<OnlineVisitor> {
    let mut merged: HashMap<Uuid, OnlineVisitor> = HashMap::new();
    let mut add = |r: OnlineVisitor| match merged.get_mut(&r.id) {
        Some(known) => known.merge(r),
        None => {
            merged.insert(r.id, r);
        }
    };
    if let (Some(redis), Some(nodes)) = (&state.redis, live_nodes(state).await) {
        let others: Vec<&String> = nodes.iter().filter(|n| **n != state.node_id).collect();
        if !others.is_empty() {
            let mut pipe = redis::pipe();
            for n in &others {
                pipe.cmd("HVALS").arg(node_key(state, n));
            }
            if let Some(rows) = redis
                .query_pipe::<Vec<Vec<String>>>("presence_list", &pipe)
                .await
            {
                rows.into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str::<OnlineVisitor>(&v).ok())
                    .for_each(&mut add);
            }
        }
    }
    // This node's own straight from memory: always current, also while Redis is away.
    state.bus.presence.all().into_iter().for_each(&mut add);
    let mut all: Vec<OnlineVisitor> = merged.into_values().collect();
    all.sort_by(|a, b| {
        b.visit_started_at
            .cmp(&a.visit_started_at)
            .then(a.id.cmp(&b.id))
    });
    all.truncate(limit);
    all
}

/// Whether the visitor is connected to any node now.
pub async fn is_online(state: &AppState, id: Uuid) -> bool {
    state.bus.presence.get(id).is_some() || elsewhere(state, id).await
}

/// The visitors online now with their latest conversations.
pub async fn list_with_conversations(
    state: &AppState,
    limit: usize,
) -> AppResult<Vec<OnlineVisitor>> {
    let mut all = list(state, limit).await;
    let ids: Vec<Uuid> = all.iter().map(|r| r.id).collect();
    let convs = state
        .db
        .run(async |conn| crate::db::conversations::latest_for_visitors(conn, &ids).await)
        .await?;
    let mut by_visitor: HashMap<Uuid, Conversation> =
        convs.into_iter().map(|c| (c.visitor_id, c)).collect();
    for r in &mut all {
        r.conversation = by_visitor.remove(&r.id);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: Uuid, started: i64, updated: i64, page: &str) -> OnlineVisitor {
        OnlineVisitor {
            id,
            site_id: Uuid::nil(),
            site_name: "Shop".into(),
            name: None,
            email: None,
            page_url: Some(page.into()),
            page_title: None,
            referrer: None,
            visit_started_at: DateTime::from_timestamp(started, 0).unwrap_or_default(),
            updated_at: DateTime::from_timestamp(updated, 0).unwrap_or_default(),
            conversation: None,
        }
    }

    #[test]
    fn merging_keeps_the_earliest_visit_and_the_latest_page() {
        let id = Uuid::new_v4();
        let mut a = record(id, 100, 200, "/a");
        a.merge(record(id, 150, 300, "/b"));
        assert_eq!(a.page_url.as_deref(), Some("/b"));
        assert_eq!(a.visit_started_at.timestamp(), 100);
        let mut b = record(id, 150, 300, "/b");
        b.merge(record(id, 100, 200, "/a"));
        assert_eq!(b.page_url.as_deref(), Some("/b"));
        assert_eq!(b.visit_started_at.timestamp(), 100);
    }

    #[test]
    fn a_visitor_stays_listed_for_the_grace_period_after_leaving() {
        let p = Presence::default();
        let id = Uuid::new_v4();
        let n = Arc::new(Notify::new());
        assert!(p.join(record(id, 1, 1, "/"), None, 1, Link::Poll(n.clone())));
        assert!(!p.join(record(id, 1, 1, "/"), None, 2, Link::Poll(n.clone())));
        assert_eq!(p.take_unstarted(), vec![id]);
        assert_eq!(p.take_changed().len(), 1, "announced once");
        assert!(p.take_changed().is_empty());
        p.leave(id, 1);
        assert!(
            p.expire(Duration::ZERO).is_empty(),
            "one link is still open"
        );
        p.leave(id, 2);
        assert!(p.expire(Duration::from_secs(60)).is_empty(), "within grace");
        assert_eq!(p.expire(Duration::ZERO), vec![id]);
        assert!(p.is_empty());
    }
}
