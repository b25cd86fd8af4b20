//! Several nodes of one deployment: one PostgreSQL database, one Redis, no sticky sessions.
//! Visitors and agents on different nodes must chat as if they shared one; the cache must
//! be invalidated everywhere; assignment must stay consistent when nodes race; and a Redis
//! outage must degrade, then heal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::private_redis::PrivateRedis;
use common::{eventually, TestApp, WAIT};
use serde_json::{json, Value};

async fn open_conversation(
    app: &TestApp,
    key: &str,
    text: &str,
) -> (common::WsClient, Value, String) {
    let (mut v, welcome) = app.visitor(key).await;
    v.send_json(json!({"type": "message.send", "client_msg_id": "first", "body": text}))
        .await;
    let ack = v.recv_until("message.ack").await;
    let conv = ack["message"]["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_string();
    (v, welcome, conv)
}

#[actix_web::test]
async fn cluster_visitor_and_agent_on_different_nodes_chat() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer().await;
    let key = a.create_site().await;
    let agent = a.online_agent("Ana", 5).await;
    // The agent works on node B, the visitor on node A.
    let mut agent_ws = b.agent_ws(&agent.token).await;
    let (mut visitor, _, conv) = open_conversation(&a, &key, "hello from node A").await;

    // The message and the assignment race each other to the agent: accept either order.
    let (mut created, mut assigned) = (None, None);
    while created.is_none() || assigned.is_none() {
        let f = agent_ws.recv_json().await;
        if f["type"] == "message.created" && f["message"]["body"] == "hello from node A" {
            created = Some(f);
        } else if f["type"] == "conversation.updated"
            && f["conversation"]["assignee"]["id"] == agent.id.as_str()
        {
            assigned = Some(f);
        }
    }
    let (created, assigned) = (created.unwrap(), assigned.unwrap());
    assert_eq!(created["conversation_id"], conv.as_str());
    // Assignment happened on some node; the agent on B hears of it.
    assert_eq!(assigned["conversation"]["status"], "open");

    // Agent → visitor across nodes, over the agent WebSocket on B.
    agent_ws
        .send_json(json!({"type": "message.send", "conversation_id": conv, "client_msg_id": "r1", "body": "hi from node B"}))
        .await;
    let ack = agent_ws.recv_until("message.ack").await;
    assert_eq!(ack["message"]["seq"], 2);
    let got = visitor
        .recv_until_where("message.created", |f| {
            f["message"]["body"] == "hi from node B"
        })
        .await;
    assert_eq!(got["message"]["seq"], 2);
    assert_eq!(got["message"]["sender_type"], "agent");

    // Typing and read receipts cross nodes both ways.
    visitor
        .send_json(json!({"type": "typing", "on": true}))
        .await;
    let typing = agent_ws.recv_until("typing").await;
    assert_eq!(typing["conversation_id"], conv.as_str());
    assert_eq!(typing["sender_type"], "visitor");
    assert_eq!(typing["on"], true);
    agent_ws
        .send_json(json!({"type": "typing", "conversation_id": conv, "on": true}))
        .await;
    let typing = visitor.recv_until("typing").await;
    assert_eq!(typing["sender_type"], "agent");
    visitor
        .send_json(json!({"type": "read", "up_to_seq": 2}))
        .await;
    let read = agent_ws.recv_until("message.read").await;
    assert_eq!(read["up_to_seq"], 2);
    agent_ws
        .send_json(json!({"type": "read", "conversation_id": conv, "up_to_seq": 1}))
        .await;
    let read = visitor.recv_until("message.read").await;
    assert_eq!(read["up_to_seq"], 1);

    // A reply over HTTP on node A reaches the agent socket on B as well.
    let (status, _) = a
        .reply(&agent.token, &conv, "r2", "second reply", false)
        .await;
    assert_eq!(status, 201);
    agent_ws
        .recv_until_where("message.created", |f| {
            f["message"]["body"] == "second reply"
        })
        .await;
    visitor
        .recv_until_where("message.created", |f| {
            f["message"]["body"] == "second reply"
        })
        .await;
}

#[actix_web::test]
async fn cache_invalidation_reaches_other_nodes_within_a_second() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer().await;
    let site = a
        .create_site_with(json!({"name": "Shop", "greeting": "Old greeting"}))
        .await;
    let key = site["widget_key"].as_str().expect("key").to_string();
    let id = site["id"].as_str().expect("id").to_string();
    // Node B caches the configuration.
    for _ in 0..2 {
        let (status, cfg) = b
            .request(
                reqwest::Method::GET,
                &format!("/api/config?site={key}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(cfg["greeting"], "Old greeting");
    }
    let admin = a.admin_token().await;
    let (status, _) = a
        .request(
            reqwest::Method::PATCH,
            &format!("/api/sites/{id}"),
            Some(&admin),
            Some(&json!({"greeting": "New greeting"})),
        )
        .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    loop {
        let (_, cfg) = b
            .request(
                reqwest::Method::GET,
                &format!("/api/config?site={key}"),
                None,
                None,
            )
            .await;
        if cfg["greeting"] == "New greeting" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "node B still serves the old greeting after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a visitor connecting to B is greeted with the new text.
    let (_v, welcome) = b.visitor(&key).await;
    assert_eq!(welcome["greeting"], "New greeting");
}

#[actix_web::test]
async fn racing_assignment_from_two_nodes_never_double_assigns_or_exceeds_capacity() {
    let a = TestApp::spawn().await;
    let b = a.spawn_peer().await;
    let key = a.create_site().await;
    let agents = [
        a.create_agent("Ann", 2).await,
        a.create_agent("Bob", 3).await,
    ];
    // Repeat: waves of conversations queue up while nobody is online, then agents come
    // online on different nodes at once and both nodes' assigners race.
    for round in 0..3 {
        let mut visitors = Vec::new();
        for i in 0..8 {
            let node = if i % 2 == 0 { &a } else { &b };
            let (v, _, _) =
                open_conversation(node, &key, &format!("round {round} visitor {i}")).await;
            visitors.push(v);
        }
        let (r1, r2) = tokio::join!(
            a.put(
                "/api/me/status",
                &agents[0].token,
                json!({"status": "online"})
            ),
            b.put(
                "/api/me/status",
                &agents[1].token,
                json!({"status": "online"})
            ),
        );
        assert_eq!(r1.0, 200);
        assert_eq!(r2.0, 200);
        // Capacity 5 in all: exactly 5 conversations end up open, 2 and 3 per agent.
        let open = eventually("five assignments", || async {
            let n = a
                .sql_i64("SELECT count(*) AS n FROM conversations WHERE status = 'open'")
                .await;
            (n == 5).then_some(n)
        })
        .await;
        assert_eq!(open, 5);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per_agent = a
            .sql_rows(
                "SELECT a.email, a.max_open, count(c.id) AS open FROM agents a \
                 LEFT JOIN conversations c ON c.assignee_id = a.id AND c.status = 'open' \
                 GROUP BY a.id ORDER BY a.email",
            )
            .await;
        for row in &per_agent {
            assert!(
                row["open"].as_i64().unwrap() <= row["max_open"].as_i64().unwrap(),
                "over capacity: {row}"
            );
        }
        let waiting = a
            .sql_i64("SELECT count(*) AS n FROM conversations WHERE status = 'pending' AND assignee_id IS NULL")
            .await;
        assert_eq!(waiting, 3, "the other three wait in the queue");
        // Reset for the next round: everyone offline, everything resolved.
        for ag in &agents {
            a.set_status(&ag.token, "offline").await;
        }
        a.sql_exec("UPDATE conversations SET status = 'resolved', resolved_at = now()")
            .await;
        drop(visitors);
    }
}

#[actix_web::test]
async fn redis_outage_degrades_then_heals_and_resume_fills_gaps() {
    let port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start_on(port).await;
    let url = redis.url();
    let a = TestApp::spawn_with(|s| s.redis_url = Some(url.clone())).await;
    let b = a.spawn_peer().await;
    let key = a.create_site().await;
    let agent = a.online_agent("Ola", 5).await;
    let mut agent_on_a = a.agent_ws(&agent.token).await;
    let mut agent_on_b = b.agent_ws(&agent.token).await;
    let (mut visitor, welcome, conv) = open_conversation(&a, &key, "before the outage").await;
    agent_on_b
        .recv_until_where("message.created", |f| {
            f["message"]["body"] == "before the outage"
        })
        .await;

    redis.stop();
    // Readiness names Redis as down on both nodes.
    for node in [&a, &b] {
        eventually("readyz reports redis down", || async {
            let (status, body) = node
                .request(reqwest::Method::GET, "/readyz", None, None)
                .await;
            (status == 503 && body["redis"] == "down" && body["postgres"] == "ok").then_some(())
        })
        .await;
    }
    // Each node keeps serving its own clients: visitor and agent on A chat.
    for i in 0..3 {
        visitor
            .send_json(json!({"type": "message.send", "client_msg_id": format!("out-{i}"), "body": format!("during outage {i}")}))
            .await;
        let ack = visitor.recv_until("message.ack").await;
        assert_eq!(ack["message"]["seq"], 2 + i);
        agent_on_a
            .recv_until_where("message.created", |f| {
                f["message"]["body"] == format!("during outage {i}").as_str()
            })
            .await;
    }
    // Cached configuration is still served on both nodes, and logins work.
    let (status, _) = b
        .request(
            reqwest::Method::GET,
            &format!("/api/config?site={key}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let _ = b.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;

    // Redis returns on the same port: cross-node delivery resumes by itself.
    let _redis = PrivateRedis::start_on(port).await;
    for node in [&a, &b] {
        eventually("readyz ok again", || async {
            let (status, _) = node
                .request(reqwest::Method::GET, "/readyz", None, None)
                .await;
            (status == 200).then_some(())
        })
        .await;
    }
    // Pub/sub may drop what was published while the subscription was re-established;
    // keep sending until one message crosses.
    let deadline = std::time::Instant::now() + WAIT * 2;
    let delivered = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "cross-node delivery did not resume"
        );
        let n = rand_suffix();
        visitor
            .send_json(json!({"type": "message.send", "client_msg_id": format!("after-{n}"), "body": format!("after the outage {n}")}))
            .await;
        visitor.recv_until("message.ack").await;
        if let common::Received::Json(v) = agent_on_b.recv_within(Duration::from_millis(700)).await
        {
            if v["type"] == "message.created" {
                break v;
            }
        }
    };
    assert_eq!(delivered["conversation_id"], conv.as_str());

    // A client on B that missed the outage's messages closes the gap with resume.
    let token = welcome["token"].as_str().expect("token");
    let (mut again, _) = b.visitor_again(&key, token).await;
    again
        .send_json(json!({"type": "resume", "after_seq": 1}))
        .await;
    let history = again.recv_until("message.history").await;
    let seqs: Vec<i64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    let expected: Vec<i64> = (2..2 + seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every message after seq 1, in order, once");
    assert!(
        seqs.len() >= 4,
        "the outage's three messages and the later ones: {seqs:?}"
    );
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
