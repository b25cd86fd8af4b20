//! Assignment and the conversation lifecycle: capacity (`max_open`), the queue served
//! oldest first, least-loaded with round-robin ties, transfer/claim/resolve/reopen and who
//! hears about them, and the inbox views.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// A new visitor writes its first message; answers the socket and the conversation id.
async fn new_conversation(app: &TestApp, key: &str, body: &str) -> (WsClient, String) {
    let (mut v, _) = app.visitor(key).await;
    let m = send_and_ack(&mut v, "first", body).await;
    (v, id(&m["conversation_id"]))
}

/// The next `conversation.updated` about `conv` on `ws` for which `pred` holds.
async fn updated(ws: &mut WsClient, conv: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let f = ws
        .recv_until_where("conversation.updated", |v| {
            v["conversation_id"] == conv && pred(&v["conversation"])
        })
        .await;
    f["conversation"].clone()
}

/// The `conversation.updated` frames for every id in `convs` matching `pred`, whatever
/// their order (the assigner announces a batch in no particular order).
async fn updated_all(
    ws: &mut WsClient,
    convs: &[&str],
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; convs.len()];
    while found.iter().any(Option::is_none) {
        let f = ws
            .recv_until_where("conversation.updated", |v| {
                convs.contains(&v["conversation_id"].as_str().unwrap_or(""))
                    && pred(&v["conversation"])
            })
            .await;
        let i = convs
            .iter()
            .position(|c| f["conversation_id"] == *c)
            .unwrap();
        found[i] = Some(f["conversation"].clone());
    }
    found.into_iter().map(Option::unwrap).collect()
}

fn assignee(c: &Value) -> Option<String> {
    c["assignee"]["id"].as_str().map(str::to_string)
}

#[actix_web::test]
async fn the_queue_is_served_oldest_first_within_capacity() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let mut watcher = app.agent_ws(&admin).await;

    // Nobody is online: three conversations wait, in this order.
    let (_v1, c1) = new_conversation(&app, &key, "first in line").await;
    let (_v2, c2) = new_conversation(&app, &key, "second in line").await;
    let (_v3, c3) = new_conversation(&app, &key, "third in line").await;
    for c in [&c1, &c2, &c3] {
        let conv = app.conversation(&admin, c).await;
        assert_eq!(conv["status"], "pending");
        assert_eq!(conv["assignee"], Value::Null);
    }
    let (_, stats) = app.get("/api/stats", &admin).await;
    assert_eq!(stats["queue_length"], 3);

    // Alice comes online with room for two: the two oldest are hers, the third waits.
    let alice = app.online_agent("Alice", 2).await;
    let got = updated_all(&mut watcher, &[&c1, &c2], |c| c["status"] == "open").await;
    for c in &got {
        assert_eq!(assignee(c).as_deref(), Some(alice.id.as_str()));
    }
    watcher
        .expect_none(
            QUIET,
            |v| v["type"] == "conversation.updated" && v["conversation_id"] == c3.as_str(),
            "the third conversation assigned beyond capacity",
        )
        .await;
    let conv3 = app.conversation(&admin, &c3).await;
    assert_eq!(conv3["status"], "pending");
    assert_eq!(conv3["assignee"], Value::Null);

    // Resolving one frees capacity: the waiting conversation is assigned.
    let (status, _) = app
        .post(
            &format!("/api/conversations/{c1}/resolve"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let a3 = updated(&mut watcher, &c3, |c| c["status"] == "open").await;
    assert_eq!(assignee(&a3).as_deref(), Some(alice.id.as_str()));
    let (_, stats) = app.get("/api/stats", &admin).await;
    assert_eq!(stats["queue_length"], 0);
    assert_eq!(stats["open"], 2);
    assert_eq!(stats["resolved"], 1);

    // Full again: a new conversation waits until someone has room.
    let (_v4, c4) = new_conversation(&app, &key, "fourth").await;
    watcher
        .expect_none(
            QUIET,
            |v| {
                v["type"] == "conversation.updated"
                    && v["conversation_id"] == c4.as_str()
                    && v["conversation"]["status"] == "open"
            },
            "an assignment beyond capacity",
        )
        .await;
    let bob = app.online_agent("Bob", 1).await;
    let a4 = updated(&mut watcher, &c4, |c| c["status"] == "open").await;
    assert_eq!(assignee(&a4).as_deref(), Some(bob.id.as_str()));
}

#[actix_web::test]
async fn capacity_freed_by_resolve_goes_to_the_oldest_waiting_conversation() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 1).await;
    let mut console = app.agent_ws(&alice.token).await;

    let (_v1, c1) = new_conversation(&app, &key, "one").await;
    let a1 = updated(&mut console, &c1, |c| c["status"] == "open").await;
    assert_eq!(assignee(&a1).as_deref(), Some(alice.id.as_str()));
    let (_v2, c2) = new_conversation(&app, &key, "two").await;
    let (_v3, c3) = new_conversation(&app, &key, "three").await;
    console
        .expect_none(
            QUIET,
            |v| v["type"] == "conversation.updated" && v["conversation"]["status"] == "open",
            "an assignment over max_open",
        )
        .await;

    let (status, _) = app
        .post(
            &format!("/api/conversations/{c1}/resolve"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let a2 = updated(&mut console, &c2, |c| c["status"] == "open").await;
    assert_eq!(assignee(&a2).as_deref(), Some(alice.id.as_str()));
    console
        .expect_none(
            QUIET,
            |v| {
                v["type"] == "conversation.updated"
                    && v["conversation_id"] == c3.as_str()
                    && v["conversation"]["status"] == "open"
            },
            "the younger conversation jumping the queue",
        )
        .await;
    assert_eq!(
        app.conversation(&alice.token, &c3).await["status"],
        "pending"
    );
}

#[actix_web::test]
async fn the_least_loaded_agent_is_picked_and_ties_go_round_robin() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let bob = app.online_agent("Bob", 5).await;
    let mut console = app.agent_ws(&alice.token).await;

    let mut owners = Vec::new();
    let mut visitors = Vec::new();
    for i in 0..4 {
        let (v, c) = new_conversation(&app, &key, &format!("conversation {i}")).await;
        let a = updated(&mut console, &c, |c| c["status"] == "open").await;
        owners.push(assignee(&a).unwrap());
        visitors.push(v);
    }
    // Whoever got the first, the other got the second (least loaded), then the first again
    // (a tie, the one assigned longest ago), then the other.
    assert_ne!(owners[0], owners[1]);
    assert_eq!(owners[2], owners[0]);
    assert_eq!(owners[3], owners[1]);
    let both = [alice.id.as_str(), bob.id.as_str()];
    assert!(owners.iter().all(|o| both.contains(&o.as_str())));
}

#[actix_web::test]
async fn transfer_claim_resolve_and_reopen_notify_both_agents_and_the_visitor() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    // Bob is not available (offline) but can be handed a conversation.
    let bob = app.create_agent("Bob", 5).await;
    let admin = app.admin_token().await;
    let mut alice_ws = app.agent_ws(&alice.token).await;
    let mut bob_ws = app.agent_ws(&bob.token).await;

    let (mut visitor, c) = new_conversation(&app, &key, "Need help").await;
    let a = updated(&mut alice_ws, &c, |c| c["status"] == "open").await;
    assert_eq!(assignee(&a).as_deref(), Some(alice.id.as_str()));
    updated(&mut bob_ws, &c, |c| c["status"] == "open").await;
    visitor
        .seen_or_recv("conversation.updated", |v| {
            v["conversation"]["status"] == "open"
        })
        .await;

    // Transfer Alice → Bob.
    let (status, conv) = app
        .post(
            &format!("/api/conversations/{c}/assign"),
            &alice.token,
            json!({ "agent_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(assignee(&conv).as_deref(), Some(bob.id.as_str()));
    assert_eq!(conv["status"], "open");
    let bob_id = bob.id.clone();
    for ws in [&mut alice_ws, &mut bob_ws, &mut visitor] {
        let u = updated(ws, &c, |c| assignee(c).as_deref() == Some(bob_id.as_str())).await;
        assert_eq!(u["assignee"]["name"], "Bob");
    }

    // The admin claims it (`{}`).
    let (status, conv) = app
        .post(&format!("/api/conversations/{c}/assign"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{conv}");
    let admin_id = id(&conv["assignee"]["id"]);
    for ws in [&mut alice_ws, &mut bob_ws, &mut visitor] {
        updated(ws, &c, |c| {
            assignee(c).as_deref() == Some(admin_id.as_str())
        })
        .await;
    }

    // Resolve and reopen: everyone hears of both.
    let (status, conv) = app
        .post(
            &format!("/api/conversations/{c}/resolve"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(conv["status"], "resolved");
    assert!(!conv["resolved_at"].is_null());
    for ws in [&mut alice_ws, &mut bob_ws, &mut visitor] {
        let u = updated(ws, &c, |c| c["status"] == "resolved").await;
        assert!(!u["resolved_at"].is_null());
    }
    let (status, conv) = app
        .post(
            &format!("/api/conversations/{c}/reopen"),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(conv["status"], "open");
    for ws in [&mut alice_ws, &mut bob_ws, &mut visitor] {
        let u = updated(ws, &c, |c| c["status"] == "open").await;
        assert_eq!(u["resolved_at"], Value::Null);
    }

    // A malformed transfer is refused and changes nothing (it must not claim instead).
    let before = app.conversation(&admin, &c).await["assignee"].clone();
    for body in [
        r#"{"agent_id":"not-a-uuid"}"#,
        r#"{"agent_id":"#,
        r#"{"agent_id":5}"#,
    ] {
        let res = app
            .http
            .post(app.url(&format!("/api/conversations/{c}/assign")))
            .bearer_auth(&bob.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "{body}");
        let e: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(e["error"]["code"], "bad_request");
    }
    assert_eq!(app.conversation(&admin, &c).await["assignee"], before);
    // No body at all is a claim, like `{}`.
    let res = app
        .http
        .post(app.url(&format!("/api/conversations/{c}/assign")))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let conv: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(assignee(&conv).as_deref(), Some(bob.id.as_str()));

    // Bad targets.
    let (status, e) = app
        .post(
            &format!("/api/conversations/{c}/assign"),
            &admin,
            json!({ "agent_id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["code"], "not_found");
    let (status, e) = app
        .post(
            &format!("/api/conversations/{}/resolve", uuid::Uuid::new_v4()),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{e}");
}

#[actix_web::test]
async fn inbox_views_filter_by_status_and_assignee_and_paginate_newest_first() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let alice = app.online_agent("Alice", 2).await;
    let mut console = app.agent_ws(&alice.token).await;

    let mut convs = Vec::new();
    let mut visitors = Vec::new();
    for i in 0..3 {
        let (v, c) = new_conversation(&app, &key, &format!("c{i}")).await;
        convs.push(c);
        visitors.push(v);
    }
    // Alice (room for two) gets the first two; the third waits.
    updated_all(&mut console, &[&convs[0], &convs[1]], |c| {
        c["status"] == "open"
    })
    .await;

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| id(&c["id"]))
            .collect()
    };
    let (status, mine) = app
        .get("/api/conversations?assignee=me", &alice.token)
        .await;
    assert_eq!(status, 200);
    let mut got = ids(&mine);
    got.sort();
    let mut want = vec![convs[0].clone(), convs[1].clone()];
    want.sort();
    assert_eq!(got, want);
    let (_, waiting) = app
        .get("/api/conversations?assignee=unassigned", &admin)
        .await;
    assert_eq!(ids(&waiting), [convs[2].clone()]);
    let (_, pending) = app.get("/api/conversations?status=pending", &admin).await;
    assert_eq!(ids(&pending), [convs[2].clone()]);

    // Newest activity first, two per page.
    let (_, p1) = app.get("/api/conversations?limit=2", &admin).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().expect("a next page").to_string();
    let (_, p2) = app
        .get(
            &format!("/api/conversations?limit=2&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next_cursor"], Value::Null);
    let mut all: Vec<String> = ids(&p1);
    all.extend(ids(&p2));
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "every conversation exactly once");
    let stamps: Vec<chrono::DateTime<chrono::FixedOffset>> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["items"].as_array().unwrap())
        .map(|c| chrono::DateTime::parse_from_rfc3339(c["updated_at"].as_str().unwrap()).unwrap())
        .collect();
    let mut desc = stamps.clone();
    desc.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, desc, "newest activity first");

    let (status, e) = app.get("/api/conversations?status=bogus", &admin).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "bad_request");
    let (status, _) = app.get("/api/conversations?cursor=garbage", &admin).await;
    assert_eq!(status, 400);
}
