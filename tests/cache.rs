//! The two-level cache (`cargo test cache`): read-through, hit/miss counters per level,
//! invalidation on writes, expiry by TTL, and a Redis outage that leaves every request
//! answered from L1 and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::private_redis::PrivateRedis;
use common::{eventually, TestApp};
use reqwest::Method;
use serde_json::json;

async fn config(app: &TestApp, key: &str) -> serde_json::Value {
    let (status, body) = app
        .request(Method::GET, &format!("/api/config?site={key}"), None, None)
        .await;
    assert_eq!(status, 200, "config: {body}");
    body
}

#[actix_web::test]
async fn cache_counts_hits_and_misses_per_level() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let (h1, m1, h2, m2) = (
        app.metric(r#"cache_hits_total{level="l1"}"#).await,
        app.metric(r#"cache_misses_total{level="l1"}"#).await,
        app.metric(r#"cache_hits_total{level="l2"}"#).await,
        app.metric(r#"cache_misses_total{level="l2"}"#).await,
    );
    // First read: misses L1 and L2 (nobody read this site yet), fills both.
    assert_eq!(config(&app, &key).await["greeting"], "Hi! How can we help?");
    // Next reads: L1 hits.
    for _ in 0..3 {
        config(&app, &key).await;
    }
    assert_eq!(
        app.metric(r#"cache_misses_total{level="l1"}"#).await - m1,
        1.0
    );
    assert_eq!(
        app.metric(r#"cache_hits_total{level="l1"}"#).await - h1,
        3.0
    );
    assert_eq!(
        app.metric(r#"cache_misses_total{level="l2"}"#).await - m2,
        1.0
    );
    assert_eq!(
        app.metric(r#"cache_hits_total{level="l2"}"#).await - h2,
        0.0
    );

    // A second node has an empty L1 but finds the entry in Redis (L2).
    let peer = app.spawn_peer().await;
    config(&peer, &key).await;
    assert_eq!(peer.metric(r#"cache_hits_total{level="l2"}"#).await, 1.0);
    // The ratio gauge follows the counters (refreshed every second).
    let ratio = eventually("l1 ratio", || async {
        let r = app.metric(r#"cache_hit_ratio{level="l1"}"#).await;
        (r > 0.0).then_some(r)
    })
    .await;
    assert!(ratio > 0.0 && ratio <= 1.0);
}

#[actix_web::test]
async fn cache_entries_expire_by_ttl() {
    let app = TestApp::spawn_with(|s| s.cache_site_secs = 1).await;
    let key = app.create_site().await;
    assert_eq!(config(&app, &key).await["greeting"], "Hi! How can we help?");
    // A change behind kefu's back (no invalidation) shows once the entries expire.
    app.sql_exec(&format!(
        "UPDATE sites SET greeting = 'Changed directly' WHERE widget_key = '{key}'"
    ))
    .await;
    app.server()
        .state
        .redis
        .as_ref()
        .expect("redis configured")
        .query::<i64>(
            "test_del",
            redis::cmd("DEL").arg(format!("{}:cache:site:{key}", app.settings.redis_prefix)),
        )
        .await;
    assert_eq!(config(&app, &key).await["greeting"], "Hi! How can we help?");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(config(&app, &key).await["greeting"], "Changed directly");
}

#[actix_web::test]
async fn cache_of_visitor_profiles_is_invalidated_by_profile_updates() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let (mut v, _) = app.visitor(&key).await;
    v.send_json(json!({"type": "message.send", "client_msg_id": "a", "body": "hi"}))
        .await;
    let conv = v.recv_until("message.ack").await["message"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.conversation(&admin, &conv).await["visitor"]["name"],
        serde_json::Value::Null
    );
    v.send_json(json!({"type": "profile.update", "name": "Mei", "email": "mei@example.com"}))
        .await;
    v.recv_until("visitor.updated").await;
    let c = app.conversation(&admin, &conv).await;
    assert_eq!(c["visitor"]["name"], "Mei");
    assert_eq!(c["visitor"]["email"], "mei@example.com");
}

#[actix_web::test]
async fn cache_of_history_pages_never_hides_a_committed_message() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let (mut v, welcome) = app.visitor(&key).await;
    let token = welcome["token"].as_str().unwrap().to_string();
    for i in 0..5 {
        v.send_json(json!({"type": "message.send", "client_msg_id": format!("m{i}"), "body": format!("m{i}")}))
            .await;
        v.recv_until("message.ack").await;
    }
    let conv = app.sql_rows("SELECT id::text FROM conversations").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let seqs = |h: &serde_json::Value| -> Vec<i64> {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    v.send_json(json!({"type": "resume", "after_seq": 2})).await;
    assert_eq!(seqs(&v.recv_until("message.history").await), vec![3, 4, 5]);
    // Served again from the cached page…
    let hits = app.metric(r#"cache_hits_total{level="l1"}"#).await;
    v.send_json(json!({"type": "resume", "after_seq": 0})).await;
    assert_eq!(
        seqs(&v.recv_until("message.history").await),
        vec![1, 2, 3, 4, 5]
    );
    assert!(app.metric(r#"cache_hits_total{level="l1"}"#).await > hits);
    // …until new messages (a note and a reply) are committed: the note stays hidden from
    // the visitor, the reply shows.
    app.reply(&admin, &conv, "n1", "internal note", true).await;
    app.reply(&admin, &conv, "r1", "reply", false).await;
    v.send_json(json!({"type": "resume", "after_seq": 4})).await;
    assert_eq!(seqs(&v.recv_until("message.history").await), vec![5, 7]);
    // A page older than the cached one comes from PostgreSQL, complete and in order.
    for i in 0..60 {
        app.reply(
            &admin,
            &conv,
            &format!("bulk{i}"),
            &format!("bulk {i}"),
            false,
        )
        .await;
    }
    let (mut again, _) = app.visitor_again(&key, &token).await;
    again
        .send_json(json!({"type": "resume", "after_seq": 0}))
        .await;
    let all = seqs(&again.recv_until("message.history").await);
    let expected: Vec<i64> = (1..=67).filter(|s| *s != 6).collect();
    assert_eq!(all, expected);
    // Agents see notes in the same cached path.
    let (status, page) = app
        .get(
            &format!("/api/conversations/{conv}/messages?after_seq=60"),
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    let agent_seqs: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(agent_seqs, (61..=67).collect::<Vec<_>>());
}

#[actix_web::test]
async fn cache_keeps_answering_from_l1_and_postgres_while_redis_is_down() {
    let port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start_on(port).await;
    let url = redis.url();
    let app = TestApp::spawn_with(|s| s.redis_url = Some(url.clone())).await;
    let key = app.create_site().await;
    let other = app
        .create_site_with(json!({"name": "Other", "greeting": "Other greeting"}))
        .await;
    let other_key = other["widget_key"].as_str().unwrap().to_string();
    config(&app, &key).await; // cached in L1 before the outage
    redis.stop();
    let started = std::time::Instant::now();
    // L1 hit and L1 miss (PostgreSQL) both answer, quickly.
    assert_eq!(config(&app, &key).await["greeting"], "Hi! How can we help?");
    assert_eq!(config(&app, &other_key).await["greeting"], "Other greeting");
    let admin = app.admin_token().await;
    let (mut v, _) = app.visitor(&key).await;
    v.send_json(json!({"type": "message.send", "client_msg_id": "x", "body": "still here"}))
        .await;
    let ack = v.recv_until("message.ack").await;
    let conv = ack["message"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.conversation(&admin, &conv).await["id"], conv.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "requests waited on Redis: {:?}",
        started.elapsed()
    );
    let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 503);
    assert_eq!(body["redis"], "down");
    // Redis returns: the node notices by itself.
    let _redis = PrivateRedis::start_on(port).await;
    eventually("readyz ok", || async {
        let (status, _) = app.request(Method::GET, "/readyz", None, None).await;
        (status == 200).then_some(())
    })
    .await;
}
