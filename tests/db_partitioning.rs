//! Schema 2 on a running node: messages partitioned by month, uniqueness kept by
//! message_keys across months, history and resends that reach old partitions, partition
//! upkeep, and retention. The large-data side (a generated database of a million messages,
//! the upgrade script, query plans) is scripts/test.d/30-database.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

/// A visitor's first message creates a conversation: its id and the visitor's id.
async fn new_conversation(app: &TestApp, site: &str, client_msg_id: &str) -> (String, String) {
    let (mut visitor, welcome) = app.visitor(site).await;
    visitor
        .send_json(json!({"type": "message.send", "client_msg_id": client_msg_id, "body": "hello"}))
        .await;
    let ack = visitor.recv_until("message.ack").await;
    (
        ack["message"]["conversation_id"]
            .as_str()
            .expect("conversation id")
            .to_string(),
        welcome["visitor"]["id"]
            .as_str()
            .expect("visitor id")
            .to_string(),
    )
}

/// The statement must fail, naming `constraint`.
async fn refused(app: &TestApp, sql: &str, constraint: &str) {
    let mut conn = app.db().await;
    match diesel::sql_query(sql).execute(&mut conn).await {
        Ok(_) => panic!("accepted: {sql}"),
        Err(e) => assert!(
            e.to_string().contains(constraint),
            "{sql}: refused for another reason: {e}"
        ),
    }
}

async fn keys_match_messages(app: &TestApp) {
    assert_eq!(
        app.sql_i64(
            "SELECT ((SELECT count(*) FROM message_keys) - (SELECT count(*) FROM messages)) AS n"
        )
        .await,
        0,
        "message_keys has one row per message"
    );
}

fn seqs(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect()
}

/// A conversation that began 13 months ago: seq 1–3 in three old months, seq 4 (the
/// visitor's first message, renumbered) now. Returns (conversation, visitor).
async fn conversation_spanning_months(app: &TestApp, site: &str) -> (String, String) {
    let (conv, visitor) = new_conversation(app, site, "v-now").await;
    app.sql_exec("SELECT kefu_ensure_partitions(3, now() - interval '14 months')")
        .await;
    app.sql_exec(&format!(
        "UPDATE conversations SET created_at = now() - interval '13 months', last_seq = 4 WHERE id = '{conv}'"
    ))
    .await;
    // An UPDATE of the key columns goes through message_keys too.
    app.sql_exec(&format!(
        "UPDATE messages SET seq = 4 WHERE conversation_id = '{conv}' AND seq = 1"
    ))
    .await;
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, body, client_msg_id, created_at)
         VALUES (gen_random_uuid(), '{conv}', 1, 'visitor', '{visitor}', 'a year ago', 'v-old-1', now() - interval '13 months'),
                (gen_random_uuid(), '{conv}', 2, 'bot', NULL, 'months ago', NULL, now() - interval '8 months'),
                (gen_random_uuid(), '{conv}', 3, 'visitor', '{visitor}', 'last season', 'v-old-3', now() - interval '3 months')"
    ))
    .await;
    (conv, visitor)
}

#[actix_web::test]
async fn history_reads_across_month_partitions_in_seq_order() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let (conv, _) = conversation_spanning_months(&app, &site).await;
    let admin = app.admin_token().await;

    let (status, reply) = app.reply(&admin, &conv, "a-1", "back again", false).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["seq"], 5, "numbering goes on from last_seq");

    assert_eq!(
        app.sql_i64(&format!(
            "SELECT count(DISTINCT tableoid) AS n FROM messages WHERE conversation_id = '{conv}'"
        ))
        .await,
        4,
        "the conversation's messages live in four month partitions"
    );
    let all = app.history(&admin, &conv).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(all[0]["body"], "a year ago");

    let (status, page) = app
        .get(
            &format!("/api/conversations/{conv}/messages?after_seq=2"),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        seqs(page["items"].as_array().expect("items")),
        vec![3, 4, 5]
    );
    let (status, page) = app
        .get(
            &format!("/api/conversations/{conv}/messages?before_seq=4&limit=2"),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(seqs(page["items"].as_array().expect("items")), vec![2, 3]);
    assert_eq!(page["more"], true);
    keys_match_messages(&app).await;
}

#[actix_web::test]
async fn duplicates_are_refused_across_months_and_resends_find_old_originals() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let (conv, visitor) = conversation_spanning_months(&app, &site).await;
    let admin = app.admin_token().await;
    let admin_id = app
        .sql_rows("SELECT id FROM agents ORDER BY created_at LIMIT 1")
        .await[0]["id"]
        .as_str()
        .expect("admin id")
        .to_string();

    // seq 1 lives 13 months back; the copy would go to this month's partition.
    refused(
        &app,
        &format!(
            "INSERT INTO messages (id, conversation_id, seq, sender_type, body)
             VALUES (gen_random_uuid(), '{conv}', 1, 'system', 'dup seq')"
        ),
        "message_keys_pkey",
    )
    .await;
    refused(
        &app,
        &format!(
            "INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, body, client_msg_id)
             VALUES (gen_random_uuid(), '{conv}', 99, 'visitor', '{visitor}', 'dup key', 'v-old-1')"
        ),
        "message_keys_idempotency",
    )
    .await;
    refused(
        &app,
        &format!(
            "INSERT INTO messages (id, conversation_id, seq, sender_type, body, created_at)
             SELECT id, conversation_id, 99, 'system', 'dup id', now() FROM messages
             WHERE conversation_id = '{conv}' AND seq = 2"
        ),
        "message_keys_id_key",
    )
    .await;

    // An agent's message from eight months ago, then the same client_msg_id again today:
    // the writer finds the original in its old partition and stores nothing.
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, sender_id, body, client_msg_id, created_at)
         VALUES (gen_random_uuid(), '{conv}', 5, 'agent', '{admin_id}', 'an old answer', 'a-old', now() - interval '8 months')"
    ))
    .await;
    app.sql_exec(&format!(
        "UPDATE conversations SET last_seq = 5 WHERE id = '{conv}'"
    ))
    .await;
    let (status, again) = app
        .reply(&admin, &conv, "a-old", "an old answer", false)
        .await;
    assert_eq!(
        status, 200,
        "a resend answers 200 with the original: {again}"
    );
    assert_eq!(again["seq"], 5);
    assert_eq!(again["body"], "an old answer");

    // Racing resends and new messages after partitioning: one copy each, no gaps.
    let mut sends = Vec::new();
    for i in 0..12 {
        let (app, admin, conv) = (&app, admin.clone(), conv.clone());
        sends.push(async move {
            let id = if i < 6 {
                "same".to_string()
            } else {
                format!("n-{i}")
            };
            app.reply(&admin, &conv, &id, "racing", false).await
        });
    }
    let results = futures_util::future::join_all(sends).await;
    for (status, body) in &results {
        assert!(*status == 200 || *status == 201, "{status} {body}");
    }
    let same: Vec<&Value> = results[..6].iter().map(|(_, b)| &b["id"]).collect();
    assert!(
        same.iter().all(|id| *id == same[0]),
        "one message for six resends"
    );
    let all = app.history(&admin, &conv).await;
    assert_eq!(
        seqs(&all),
        (1..=12).collect::<Vec<_>>(),
        "5 + 1 + 6 messages"
    );
    keys_match_messages(&app).await;
}

#[actix_web::test]
async fn ensure_partitions_moves_stray_rows_out_of_the_default_partition() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let (conv, _) = new_conversation(&app, &site, "v-1").await;
    // A clock far ahead: no partition covers the row, the default one catches it.
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, body, created_at)
         VALUES (gen_random_uuid(), '{conv}', 2, 'system', 'from the future', now() + interval '7 months')"
    ))
    .await;
    assert_eq!(
        app.sql_i64("SELECT count(*) AS n FROM messages_default")
            .await,
        1
    );
    let created = app
        .sql_rows("SELECT name FROM kefu_ensure_partitions(3) AS name")
        .await;
    let month = app
        .sql_rows(
            "SELECT 'messages_p' || to_char((now() + interval '7 months') AT TIME ZONE 'UTC', 'YYYY_MM') AS name",
        )
        .await;
    assert_eq!(created, month, "the stray row's month, and nothing else");
    assert_eq!(
        app.sql_i64("SELECT count(*) AS n FROM messages_default")
            .await,
        0
    );
    let home = app
        .sql_rows(&format!(
            "SELECT tableoid::regclass::text AS name FROM messages WHERE conversation_id = '{conv}' AND seq = 2"
        ))
        .await;
    assert_eq!(home, month);
    assert!(
        app.sql_rows("SELECT name FROM kefu_ensure_partitions(3) AS name")
            .await
            .is_empty(),
        "a second run creates nothing"
    );
    keys_match_messages(&app).await;
}

#[actix_web::test]
async fn purge_removes_only_conversations_past_retention() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    app.sql_exec("SELECT kefu_ensure_partitions(3, now() - interval '15 months')")
        .await;
    // a: resolved long ago, its month shared with b (open): rows deleted, month kept.
    // c: resolved long ago, alone in its month: the partition is dropped.
    // d: resolved two days ago: kept.
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let (conv, _) = new_conversation(&app, &site, &format!("{name}-1")).await;
        ids.push(conv);
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // The conversation on the 3rd of a month long ago, its messages then too (the UPDATE
    // moves them to that month's partition).
    let backdate = |conv: &str, months: i32, status: &str| {
        let day = |d: i32| {
            format!("date_trunc('month', now(), 'UTC') - interval '{months} months' + interval '{d} days'")
        };
        [
            format!(
                "UPDATE conversations SET created_at = {}, updated_at = {},
                     resolved_at = CASE WHEN '{status}' = 'resolved' THEN {} END, status = '{status}'
                 WHERE id = '{conv}'",
                day(2),
                day(3),
                day(3)
            ),
            format!(
                "UPDATE messages SET created_at = {} WHERE conversation_id = '{conv}'",
                day(2)
            ),
        ]
    };
    for sql in backdate(a, 14, "resolved")
        .into_iter()
        .chain(backdate(b, 14, "open"))
        .chain(backdate(c, 12, "resolved"))
    {
        app.sql_exec(&sql).await;
    }
    app.sql_exec(&format!(
        "UPDATE conversations SET status = 'resolved', resolved_at = now() - interval '2 days',
             updated_at = now() - interval '2 days' WHERE id = '{d}'"
    ))
    .await;
    // Two more messages for a, so the counts are not all ones.
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, body, created_at)
         SELECT gen_random_uuid(), '{a}', s, 'bot', 'more', created_at FROM messages, generate_series(2, 3) s
         WHERE conversation_id = '{a}' AND seq = 1"
    ))
    .await;
    let month_of = |conv: &str| {
        format!("SELECT tableoid::regclass::text AS name FROM messages WHERE conversation_id = '{conv}' LIMIT 1")
    };
    let c_month = app.sql_rows(&month_of(c)).await[0]["name"].clone();
    let a_month = app.sql_rows(&month_of(a)).await[0]["name"].clone();

    let out = app
        .sql_rows("SELECT * FROM kefu_purge('180 days')")
        .await
        .remove(0);
    assert_eq!(out["conversations_removed"], 2, "{out}");
    assert_eq!(out["messages_removed"], 4, "{out}");
    let dropped = out["partitions_dropped"].as_array().expect("names").clone();
    assert!(dropped.contains(&c_month), "c's month dropped whole: {out}");
    assert!(!dropped.contains(&a_month), "b keeps a's month: {out}");

    let left = app
        .sql_rows("SELECT id::text AS id FROM conversations ORDER BY id")
        .await;
    let mut want = vec![json!({"id": b}), json!({"id": d})];
    want.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
    assert_eq!(left, want, "b (open) and d (recent) stay");
    assert_eq!(
        app.sql_i64("SELECT count(*) AS n FROM messages").await,
        2,
        "b's and d's messages stay"
    );
    keys_match_messages(&app).await;
    let again = app
        .sql_rows("SELECT * FROM kefu_purge('180 days')")
        .await
        .remove(0);
    assert_eq!(again["conversations_removed"], 0);
    assert_eq!(again["messages_removed"], 0);
    refused(
        &app,
        "SELECT * FROM kefu_purge('1 hour')",
        "at least one day",
    )
    .await;
}
