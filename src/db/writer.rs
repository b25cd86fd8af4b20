//! The message writer: every message of this node is committed here, in batches.
//!
//! Conversations are sharded over a few writer tasks (one conversation always lands on the
//! same shard, keeping its order). Each shard takes what has queued up since its last
//! commit — group commit: no timer, the batch is whatever arrived during the previous
//! transaction — and commits it in one transaction:
//!
//! 1. lock the batch's conversations (`SELECT … FOR UPDATE`, in id order: no deadlocks),
//!    which serialises writers of one conversation across nodes and nobody else;
//! 2. find resends (`client_msg_id` already stored) — after the lock, so a racing node
//!    has either committed its copy or not started;
//! 3. number the new messages from `last_seq` and insert them in one statement;
//! 4. move `last_seq`, activity time, first response, and reopen resolved conversations
//!    that a visitor wrote to;
//! 5. write the batch's events (`message.created` per message, `conversation.updated` per
//!    reopened conversation) to the durable stream ([`super::events`]) in one statement.
//!
//! Only after the commit are the senders answered and the messages published on the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Int8};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::{mpsc, oneshot, Notify};
use uuid::Uuid;

use super::events::NewEvent;
use super::messages::MessageRow;
use super::schema::{conversations, message_keys, messages};
use super::Db;
use crate::bus::{Bus, Event};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::protocol::{Conversation, ConversationStatus, Message, SenderType};

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: Uuid,
    pub sender_type: SenderType,
    pub sender_id: Option<Uuid>,
    pub private: bool,
    /// Already validated and trimmed.
    pub body: String,
    pub client_msg_id: Option<String>,
    /// Ids of uploaded files the message carries (checked against the sender here, under
    /// the conversation lock, and linked to the message in the same transaction).
    pub attachments: Vec<Uuid>,
    /// The sending session, which gets an ack instead of `message.created`.
    pub origin: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Stored now.
    Created(Message),
    /// A resend: the message stored the first time.
    Duplicate(Message),
}

impl WriteOutcome {
    pub fn message(&self) -> &Message {
        match self {
            WriteOutcome::Created(m) | WriteOutcome::Duplicate(m) => m,
        }
    }
}

struct Request {
    msg: NewMessage,
    reply: oneshot::Sender<AppResult<WriteOutcome>>,
}

/// Handle to the writer shards; cheap to clone.
#[derive(Clone)]
pub struct MessageWriter {
    shards: Vec<mpsc::Sender<Request>>,
    /// Requests queued or being committed (a batch leaves the queue before its commit).
    pending: std::sync::Arc<AtomicUsize>,
    metrics: Metrics,
}

/// Requests one shard may hold before senders get `unavailable` (backpressure).
const SHARD_QUEUE: usize = 20_000;

impl MessageWriter {
    pub fn start(
        db: Db,
        bus: Bus,
        assign: std::sync::Arc<Notify>,
        metrics: Metrics,
        shards: usize,
        max_batch: usize,
    ) -> MessageWriter {
        let pending = std::sync::Arc::new(AtomicUsize::new(0));
        let shards = (0..shards.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                let shard = Shard {
                    index: i,
                    db: db.clone(),
                    bus: bus.clone(),
                    assign: assign.clone(),
                    metrics: metrics.clone(),
                    max_batch: max_batch.max(1),
                    pending: pending.clone(),
                };
                actix_web::rt::spawn(shard.run(rx));
                tx
            })
            .collect();
        MessageWriter {
            shards,
            pending,
            metrics,
        }
    }

    /// Commits one message (or finds its earlier copy). Resolves after the commit.
    pub async fn write(&self, msg: NewMessage) -> AppResult<WriteOutcome> {
        let shard = shard_of(msg.conversation_id, self.shards.len());
        let (reply, rx) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.shards[shard].try_send(Request { msg, reply }).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(AppError::unavailable("message writer overloaded, retry"));
        }
        self.metrics.writer_queue.inc();
        rx.await
            .map_err(|_| AppError::unavailable("message writer stopped, retry"))?
    }

    /// Waits until every queued message is committed or failed (graceful stop), or
    /// `within` has passed; answers whether everything was done. A batch being committed
    /// counts too: it has left the queue, but its senders are not answered yet.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // (`AtomicUsize::load` spelled out: diesel's `RunQueryDsl::load` is in scope.)
        while AtomicUsize::load(&self.pending, Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

fn shard_of(id: Uuid, n: usize) -> usize {
    (id.as_u128() % n as u128) as usize
}

struct Shard {
    index: usize,
    db: Db,
    bus: Bus,
    assign: std::sync::Arc<Notify>,
    metrics: Metrics,
    max_batch: usize,
    pending: std::sync::Arc<AtomicUsize>,
}

impl Shard {
    async fn run(self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let n = rx.recv_many(&mut batch, self.max_batch).await;
            if n == 0 {
                log::info!("writer shard {} stopped", self.index);
                return;
            }
            self.metrics.writer_queue.sub(n as i64);
            self.commit(std::mem::take(&mut batch)).await;
            self.pending.fetch_sub(n, Ordering::AcqRel);
            batch.reserve(self.max_batch);
        }
    }

    async fn commit(&self, batch: Vec<Request>) {
        let started = Instant::now();
        let msgs: Vec<NewMessage> = batch.iter().map(|r| r.msg.clone()).collect();
        let result = self
            .db
            .run(async |conn| {
                conn.transaction(async |conn| commit_batch(conn, &msgs).await)
                    .await
            })
            .await;
        let took = started.elapsed();
        self.metrics
            .writer_commit_seconds
            .observe(took.as_secs_f64());
        self.metrics.writer_batch_size.observe(batch.len() as f64);
        match result {
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
            Ok(committed) => {
                // Publish in commit order, then answer the senders.
                for (outcome, r) in committed.outcomes.iter().zip(&batch) {
                    if let Ok(WriteOutcome::Created(m)) = outcome {
                        self.metrics
                            .messages_processed
                            .with_label_values(&[m.sender_type.as_str()])
                            .inc();
                        self.bus.publish(Event::MessageCreated {
                            message: m.clone(),
                            origin: r.msg.origin,
                            origin_node: Some(self.bus.node_id.to_string()),
                        });
                    }
                }
                for (outcome, r) in committed.outcomes.into_iter().zip(batch) {
                    let _ = r.reply.send(outcome);
                }
                for c in committed.reopened {
                    let waiting = c.status == ConversationStatus::Pending;
                    self.bus
                        .publish(Event::ConversationUpdated { conversation: c });
                    if waiting {
                        self.assign.notify_one();
                    }
                }
            }
        }
    }
}

struct Committed {
    outcomes: Vec<AppResult<WriteOutcome>>,
    /// Conversations a visitor's message reopened, as committed.
    reopened: Vec<Conversation>,
}

#[derive(Queryable)]
struct ConvLock {
    id: Uuid,
    site_id: Uuid,
    last_seq: i64,
    status: String,
}

type IdemKey = (Uuid, SenderType, Option<Uuid>, String);

async fn commit_batch(conn: &mut AsyncPgConnection, msgs: &[NewMessage]) -> AppResult<Committed> {
    let mut conv_ids: Vec<Uuid> = msgs.iter().map(|m| m.conversation_id).collect();
    conv_ids.sort_unstable();
    conv_ids.dedup();

    // 1. Lock the conversations, in id order.
    let locked: Vec<ConvLock> = conversations::table
        .filter(conversations::id.eq_any(&conv_ids))
        .order(conversations::id.asc())
        .select((
            conversations::id,
            conversations::site_id,
            conversations::last_seq,
            conversations::status,
        ))
        .for_update()
        .load(conn)
        .await?;
    let sites: HashMap<Uuid, Uuid> = locked.iter().map(|c| (c.id, c.site_id)).collect();
    let mut convs: HashMap<Uuid, (i64, String)> = locked
        .into_iter()
        .map(|c| (c.id, (c.last_seq, c.status)))
        .collect();

    // 2. Earlier copies of resends.
    let client_ids: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m.client_msg_id.as_deref())
        .collect();
    let mut existing: HashMap<IdemKey, Message> = HashMap::new();
    if !client_ids.is_empty() {
        // Through message_keys (unpartitioned, indexed on (conversation_id, client_msg_id,
        // …)), then to the one month partition holding each original by its created_at.
        let rows: Vec<MessageRow> = message_keys::table
            .inner_join(
                messages::table.on(messages::conversation_id
                    .eq(message_keys::conversation_id)
                    .and(messages::seq.eq(message_keys::seq))
                    .and(messages::created_at.eq(message_keys::created_at))),
            )
            .filter(message_keys::conversation_id.eq_any(&conv_ids))
            .filter(message_keys::client_msg_id.eq_any(&client_ids))
            .select(MessageRow::as_select())
            .load(conn)
            .await?;
        for row in rows {
            let m = Message::from(row);
            if let Some(cid) = m.client_msg_id.clone() {
                existing.insert((m.conversation_id, m.sender_type, m.sender_id, cid), m);
            }
        }
    }

    // 2b. Files the new messages carry.
    let wanted: Vec<Uuid> = msgs
        .iter()
        .flat_map(|m| m.attachments.iter().copied())
        .collect();
    let files = if wanted.is_empty() {
        HashMap::new()
    } else {
        super::attachments::by_ids(conn, &wanted).await?
    };
    let mut links: Vec<(Uuid, Uuid, bool, Uuid)> = Vec::new(); // (file, message, private, conversation)

    // 3. Number and insert the new ones. PostgreSQL keeps microseconds: the ack and the
    // live event must carry the same `created_at` as every later read (and a resend).
    let now = Utc::now().trunc_subsecs(6);
    let mut outcomes = Vec::with_capacity(msgs.len());
    let mut rows = Vec::with_capacity(msgs.len());
    let mut events = Vec::with_capacity(msgs.len());
    let mut touched: HashMap<Uuid, (bool, bool)> = HashMap::new(); // (visitor wrote, agent replied)
    for m in msgs {
        let Some((last_seq, _)) = convs.get_mut(&m.conversation_id) else {
            outcomes.push(Err(AppError::not_found("conversation")));
            continue;
        };
        let key = m
            .client_msg_id
            .clone()
            .map(|c| (m.conversation_id, m.sender_type, m.sender_id, c));
        if let Some(k) = &key {
            if let Some(orig) = existing.get(k) {
                outcomes.push(Ok(WriteOutcome::Duplicate(orig.clone())));
                continue;
            }
        }
        let carried = match super::attachments::check_sendable(
            &files,
            &m.attachments,
            m.sender_type,
            m.sender_id,
            m.conversation_id,
        ) {
            Ok(c) => c,
            Err(e) => {
                outcomes.push(Err(e));
                continue;
            }
        };
        *last_seq += 1;
        let message = Message {
            id: Uuid::new_v4(),
            conversation_id: m.conversation_id,
            seq: *last_seq,
            sender_type: m.sender_type,
            sender_id: m.sender_id,
            private: m.private,
            body: m.body.clone(),
            client_msg_id: m.client_msg_id.clone(),
            created_at: now,
            attachments: carried,
        };
        for a in &message.attachments {
            links.push((a.id, message.id, message.private, message.conversation_id));
        }
        let t = touched.entry(m.conversation_id).or_default();
        t.0 |= m.sender_type == SenderType::Visitor;
        t.1 |= matches!(m.sender_type, SenderType::Agent | SenderType::Bot) && !m.private;
        rows.push(MessageRow::from(&message));
        if let Some(site_id) = sites.get(&m.conversation_id) {
            events.push(NewEvent::message_created(*site_id, &message));
        }
        if let Some(k) = key {
            // A resend inside the same batch answers with this copy.
            existing.insert(k, message.clone());
        }
        outcomes.push(Ok(WriteOutcome::Created(message)));
    }
    if !rows.is_empty() {
        diesel::insert_into(messages::table)
            .values(&rows)
            .execute(conn)
            .await?;
    }
    if !links.is_empty() {
        super::attachments::link(conn, &links).await?;
    }

    // 4. Move the conversations along.
    let mut reopened = Vec::new();
    if !touched.is_empty() {
        let mut ids = Vec::with_capacity(touched.len());
        let mut seqs = Vec::with_capacity(touched.len());
        let mut reopen = Vec::with_capacity(touched.len());
        let mut responded = Vec::with_capacity(touched.len());
        for (id, (visitor_wrote, agent_replied)) in &touched {
            let (seq, status) = &convs[id];
            let r = *visitor_wrote && status == "resolved";
            if r {
                reopened.push(*id);
            }
            ids.push(*id);
            seqs.push(*seq);
            reopen.push(r);
            responded.push(*agent_replied);
        }
        diesel::sql_query(
            "UPDATE conversations c SET \
               last_seq = v.last_seq, \
               updated_at = now(), \
               status = CASE WHEN v.reopen THEN \
                   (CASE WHEN c.assignee_id IS NULL THEN 'pending' ELSE 'open' END) \
                 ELSE c.status END, \
               resolved_at = CASE WHEN v.reopen THEN NULL ELSE c.resolved_at END, \
               queued_at = CASE WHEN v.reopen THEN now() ELSE c.queued_at END, \
               first_response_at = CASE WHEN v.responded \
                 THEN COALESCE(c.first_response_at, now()) ELSE c.first_response_at END \
             FROM unnest($1, $2, $3, $4) AS v(id, last_seq, reopen, responded) \
             WHERE c.id = v.id",
        )
        .bind::<Array<diesel::sql_types::Uuid>, _>(&ids)
        .bind::<Array<Int8>, _>(&seqs)
        .bind::<Array<Bool>, _>(&reopen)
        .bind::<Array<Bool>, _>(&responded)
        .execute(conn)
        .await?;
    }
    // Keep the map alive until here so `convs[id]` above is valid.
    convs.clear();

    // 5. The durable stream, in the same transaction.
    let reopened = super::conversations::get_many(conn, &reopened).await?;
    for c in &reopened {
        events.push(NewEvent::conversation(
            super::events::CONVERSATION_UPDATED,
            c,
        ));
    }
    super::events::insert(conn, &events).await?;
    Ok(Committed { outcomes, reopened })
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_are_stable() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(super::shard_of(id, 4), super::shard_of(id, 4));
        assert!(super::shard_of(id, 3) < 3);
    }
}
