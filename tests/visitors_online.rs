//! The agents' "online now" list and greeting a visitor first (issue 6), across nodes, and
//! what a long-polling visitor gets: greetings, and typing/read receipts that happened
//! between two polls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Fast offline detection for tests (2 s; the default grace is 8 s).
async fn spawn() -> TestApp {
    TestApp::spawn_with(|s| s.presence_grace_secs = 2).await
}

async fn online_list(app: &TestApp, token: &str) -> Vec<Value> {
    let (status, body) = app.get("/api/visitors/online", token).await;
    assert_eq!(status, 200, "online list: {body}");
    body["items"].as_array().expect("items").clone()
}

fn listed<'a>(items: &'a [Value], visitor_id: &str) -> Option<&'a Value> {
    items.iter().find(|v| v["id"] == visitor_id)
}

/// The record of `visitor_id` in a `visitor.online` frame (records come in batches).
fn online_record(frame: &Value, visitor_id: &str) -> Option<Value> {
    frame["visitors"]
        .as_array()?
        .iter()
        .find(|v| v["id"] == visitor_id)
        .cloned()
}

fn offline_names(frame: &Value, visitor_id: &str) -> bool {
    frame["visitor_ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|i| i == visitor_id))
}

fn page(url: &str, title: &str) -> Value {
    json!({
        "type": "profile.update",
        "attributes": { "page_url": url, "page_title": title, "referrer": "https://search.example/" },
    })
}

#[actix_web::test]
async fn a_visitor_online_is_listed_live_with_page_and_time_on_site() {
    let app = spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let mut agent = app.agent_ws(&admin).await;

    let (mut visitor, welcome) = app.visitor(&key).await;
    let vid = id(&welcome["visitor"]["id"]);
    let arrived = agent
        .recv_until_where("visitor.online", |f| online_record(f, &vid).is_some())
        .await;
    let arrived = online_record(&arrived, &vid).unwrap();
    assert_eq!(arrived["site_name"], "Shop");
    assert!(arrived["visit_started_at"].is_string());

    // The widget tells where the visitor is; agents see each page live.
    visitor
        .send_json(page("https://shop.example/shoes", "Shoes"))
        .await;
    let moved = agent
        .recv_until_where("visitor.online", |f| {
            online_record(f, &vid).is_some_and(|v| v["page_url"] == "https://shop.example/shoes")
        })
        .await;
    let moved = online_record(&moved, &vid).unwrap();
    assert_eq!(moved["page_title"], "Shoes");
    assert_eq!(moved["referrer"], "https://search.example/");

    let items = online_list(&app, &admin).await;
    let me = listed(&items, &vid).expect("the visitor is listed");
    assert_eq!(me["page_url"], "https://shop.example/shoes");
    assert_eq!(me["site_name"], "Shop");
    assert!(me["conversation"].is_null(), "no conversation yet: {me}");
    let started = chrono::DateTime::parse_from_rfc3339(me["visit_started_at"].as_str().unwrap())
        .expect("visit_started_at");
    let on_site = chrono::Utc::now().signed_duration_since(started);
    assert!(
        on_site >= chrono::Duration::zero() && on_site < chrono::Duration::minutes(1),
        "time on site {on_site}"
    );

    // A reload (a new socket right after the old one closed) keeps the visit: no
    // offline, same start.
    drop(visitor);
    let (token, site) = (id(&welcome["token"]), key.clone());
    let (mut again, _) = app.visitor_again(&site, &token).await;
    agent
        .expect_none(
            Duration::from_millis(1500),
            |f| f["type"] == "visitor.offline",
            "visitor.offline during a reload",
        )
        .await;
    let items = online_list(&app, &admin).await;
    assert_eq!(
        listed(&items, &vid).expect("still listed")["visit_started_at"],
        me["visit_started_at"]
    );

    // Gone: agents hear it, and the list forgets the visitor.
    again
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    agent
        .recv_until_where("visitor.offline", |f| offline_names(f, &vid))
        .await;
    assert!(listed(&online_list(&app, &admin).await, &vid).is_none());

    // Agents only.
    let (status, _) = app
        .request(reqwest::Method::GET, "/api/visitors/online", None, None)
        .await;
    assert_eq!(status, 401);
    let (status, body) = app.get("/api/visitors/online?limit=0", &admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
}

#[actix_web::test]
async fn the_list_spans_nodes() {
    let app = spawn().await;
    let peer = app.spawn_peer().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let mut agent = app.agent_ws(&admin).await;

    // A visitor on the other node is listed here, live and in the list.
    let (mut on_peer, welcome) = peer.visitor(&key).await;
    let vid = id(&welcome["visitor"]["id"]);
    on_peer
        .send_json(page("https://shop.example/cart", "Cart"))
        .await;
    agent
        .recv_until_where("visitor.online", |f| {
            online_record(f, &vid).is_some_and(|v| v["page_url"] == "https://shop.example/cart")
        })
        .await;
    let me = eventually("the peer's visitor in this node's list", || async {
        let items = online_list(&app, &admin).await;
        listed(&items, &vid)
            .filter(|v| v["page_url"] == "https://shop.example/cart")
            .cloned()
    })
    .await;
    assert_eq!(me["site_name"], "Shop");

    // The same visitor in a second tab on this node; closing the first tab (on the peer)
    // leaves the visitor online.
    let token = id(&welcome["token"]);
    let (_tab2, _) = app.visitor_again(&key, &token).await;
    on_peer
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    agent
        .expect_none(
            Duration::from_secs(3),
            |f| f["type"] == "visitor.offline",
            "visitor.offline while another tab is open",
        )
        .await;
    assert!(listed(&online_list(&peer, &admin).await, &vid).is_some());
    drop(_tab2);
    agent
        .recv_until_where("visitor.offline", |f| offline_names(f, &vid))
        .await;
    eventually("the visitor gone from the peer's list", || async {
        listed(&online_list(&peer, &admin).await, &vid)
            .is_none()
            .then_some(())
    })
    .await;
}

#[actix_web::test]
async fn an_agent_greets_a_visitor_first_across_nodes() {
    let app = spawn().await;
    let peer = app.spawn_peer().await;
    let key = app.create_site().await;
    let greeter = app.online_agent("Grace", 5).await;
    let mut greeter_ws = app.agent_ws(&greeter.token).await;

    // The visitor is on the other node and has written nothing.
    let (mut visitor, welcome) = peer.visitor(&key).await;
    assert!(welcome["conversation"].is_null());
    let vid = id(&welcome["visitor"]["id"]);
    eventually("the visitor online", || async {
        listed(&online_list(&app, &greeter.token).await, &vid).map(|_| ())
    })
    .await;

    let (status, greeted) = app
        .post(
            &format!("/api/visitors/{vid}/greet"),
            &greeter.token,
            json!({ "body": "Hi! Looking for running shoes?", "client_msg_id": "greet-1" }),
        )
        .await;
    assert_eq!(status, 201, "greet: {greeted}");
    let conv = id(&greeted["conversation"]["id"]);
    assert_eq!(greeted["conversation"]["status"], "open");
    assert_eq!(
        greeted["conversation"]["assignee"]["id"],
        greeter.id.as_str()
    );
    assert_eq!(greeted["message"]["sender_type"], "agent");
    assert_eq!(greeted["message"]["seq"], 1);

    // The visitor's widget takes the conversation up and shows the greeting, once.
    let updated = visitor
        .recv_until_where("conversation.updated", |f| {
            f["conversation"]["id"] == conv.as_str()
        })
        .await;
    assert_eq!(
        updated["conversation"]["assignee"]["id"],
        greeter.id.as_str()
    );
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &Value| m["body"] == "Hi! Looking for running shoes?")
    {
        let f = visitor.recv_json().await;
        match f["type"].as_str() {
            Some("message.history") => seen.extend(f["messages"].as_array().unwrap().clone()),
            Some("message.created") => seen.push(f["message"].clone()),
            _ => {}
        }
    }
    assert_eq!(seen[0]["conversation_id"], conv.as_str());

    // The agent sees the conversation, and the visitor's answer goes into it.
    greeter_ws
        .seen_or_recv("conversation.created", |f| {
            f["conversation_id"] == conv.as_str()
        })
        .await;
    let answer = send_and_ack(&mut visitor, "v-1", "Yes, size 42").await;
    assert_eq!(answer["conversation_id"], conv.as_str());
    assert_eq!(answer["seq"], 2);
    recv_message(&mut greeter_ws, "Yes, size 42").await;
    let history = app.history(&greeter.token, &conv).await;
    let bodies: Vec<&str> = history
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Hi! Looking for running shoes?", "Yes, size 42"]);
    // The list says the visitor is in that conversation now.
    let items = online_list(&app, &greeter.token).await;
    assert_eq!(
        listed(&items, &vid).unwrap()["conversation"]["id"],
        conv.as_str()
    );

    // Greeting again while the conversation is open: conflict, nothing stored.
    let (status, body) = app
        .post(
            &format!("/api/visitors/{vid}/greet"),
            &greeter.token,
            json!({ "body": "Hello again" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(app.history(&greeter.token, &conv).await.len(), 2);

    // Once resolved, a greeting reopens the visitor's conversation, assigned to the agent.
    let (status, _) = app
        .post(
            &format!("/api/conversations/{conv}/resolve"),
            &greeter.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, again) = app
        .post(
            &format!("/api/visitors/{vid}/greet"),
            &greeter.token,
            json!({ "body": "Welcome back!" }),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["conversation"]["id"], conv.as_str());
    assert_eq!(again["conversation"]["status"], "open");
    recv_message(&mut visitor, "Welcome back!").await;
}

#[actix_web::test]
async fn a_second_tab_takes_up_the_conversation_the_first_tab_started() {
    let app = spawn().await;
    let key = app.create_site().await;
    let agent = app.online_agent("Tab", 5).await;
    let (mut tab1, welcome) = app.visitor(&key).await;
    let token = id(&welcome["token"]);
    let (mut tab2, again) = app.visitor_again(&key, &token).await;
    assert!(again["conversation"].is_null());

    // The first tab's first message opens the conversation; the second tab, open since
    // before, learns of it and shows the message without a reload.
    let first = send_and_ack(&mut tab1, "t1", "Hello from tab one").await;
    let conv = id(&first["conversation_id"]);
    tab2.recv_until_where("conversation.updated", |f| {
        f["conversation"]["id"] == conv.as_str()
    })
    .await;
    // In its history, or live if it joined the room before the commit: once either way.
    let mut seen: Vec<Value> = Vec::new();
    while seen.is_empty() {
        let f = tab2.recv_json().await;
        match f["type"].as_str() {
            Some("message.history") => seen.extend(f["messages"].as_array().unwrap().clone()),
            Some("message.created") => seen.push(f["message"].clone()),
            _ => {}
        }
    }
    assert_eq!(seen[0]["body"], "Hello from tab one");
    assert_eq!(seen[0]["seq"], 1);

    // Both tabs get the agent's reply live.
    let (status, _) = app
        .reply(&agent.token, &conv, "r1", "Hi both tabs", false)
        .await;
    assert_eq!(status, 201);
    recv_message(&mut tab1, "Hi both tabs").await;
    recv_message(&mut tab2, "Hi both tabs").await;
}

#[actix_web::test]
async fn greeting_bad_requests_are_refused_clearly() {
    let app = spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let (visitor, welcome) = app.visitor(&key).await;
    let vid = id(&welcome["visitor"]["id"]);
    eventually("the visitor online", || async {
        listed(&online_list(&app, &admin).await, &vid).map(|_| ())
    })
    .await;

    let greet = |who: String, body: Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.post(&format!("/api/visitors/{who}/greet"), &admin, body)
                .await
        }
    };
    let (status, body) = greet(vid.clone(), json!({ "body": "   " })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = greet(vid.clone(), json!({ "body": "x".repeat(4001) })).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = greet(vid.clone(), json!({ "nobody": 1 })).await;
    assert_eq!(status, 400);
    let (status, _) = greet("not-a-uuid".into(), json!({ "body": "hi" })).await;
    assert_eq!(status, 404);
    let (status, _) = greet(uuid::Uuid::new_v4().to_string(), json!({ "body": "hi" })).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(
            reqwest::Method::POST,
            &format!("/api/visitors/{vid}/greet"),
            None,
            Some(&json!({ "body": "hi" })),
        )
        .await;
    assert_eq!(status, 401);

    // Gone: conflict, and no conversation is made.
    drop(visitor);
    eventually("the visitor offline", || async {
        listed(&online_list(&app, &admin).await, &vid)
            .is_none()
            .then_some(())
    })
    .await;
    let (status, body) = greet(vid.clone(), json!({ "body": "hi" })).await;
    assert_eq!(status, 409, "{body}");
    let n = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM conversations WHERE visitor_id = '{vid}'"
        ))
        .await;
    assert_eq!(n, 0);
}

// --- long-polling -----------------------------------------------------------------------

struct Poller<'a> {
    app: &'a TestApp,
    key: String,
    token: String,
}

impl Poller<'_> {
    async fn start<'a>(app: &'a TestApp, key: &str) -> (Poller<'a>, Value) {
        let res = app
            .http
            .post(app.url(&format!("/api/visitor/session?site={key}")))
            .send()
            .await
            .expect("session");
        assert_eq!(res.status(), 200);
        let welcome: Value = res.json().await.expect("welcome");
        let token = id(&welcome["token"]);
        (
            Poller {
                app,
                key: key.to_string(),
                token,
            },
            welcome,
        )
    }

    fn poll_url(&self, after_seq: i64, ev: i64) -> String {
        self.app.url(&format!(
            "/api/visitor/poll?site={}&token={}&after_seq={after_seq}&ev={ev}",
            self.key, self.token
        ))
    }

    /// One poll: its frames and `ev`, or `None` when it was still waiting after `within`.
    async fn poll(&self, after_seq: i64, ev: i64, within: Duration) -> Option<(Vec<Value>, i64)> {
        let req = self.app.http.get(self.poll_url(after_seq, ev)).send();
        let res = tokio::time::timeout(within, req).await.ok()?.expect("poll");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("poll body");
        Some((
            body["frames"].as_array().expect("frames").clone(),
            body["ev"].as_i64().expect("ev"),
        ))
    }

    async fn send(&self, frame: Value) -> Vec<Value> {
        let res = self
            .app
            .http
            .post(self.app.url(&format!(
                "/api/visitor/send?site={}&token={}",
                self.key, self.token
            )))
            .body(frame.to_string())
            .send()
            .await
            .expect("send");
        let body: Value = res.json().await.expect("send body");
        body["frames"].as_array().expect("frames").clone()
    }
}

fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

#[actix_web::test]
async fn a_long_polling_visitor_is_online_and_gets_a_greeting() {
    let app = spawn().await;
    let peer = app.spawn_peer().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let (poller, welcome) = Poller::start(&peer, &key).await;
    let vid = id(&welcome["visitor"]["id"]);

    // The waiting poll (on the peer) makes the visitor online; the greeting (through this
    // node) wakes it with the conversation and the message.
    let waiting = tokio::spawn({
        let url = poller.poll_url(0, 0);
        let http = peer.http.clone();
        async move {
            let res = http.get(url).send().await.expect("poll");
            res.json::<Value>().await.expect("poll body")
        }
    });
    eventually("the polling visitor online", || async {
        listed(&online_list(&app, &admin).await, &vid).map(|_| ())
    })
    .await;
    let (status, greeted) = app
        .post(
            &format!("/api/visitors/{vid}/greet"),
            &admin,
            json!({ "body": "Hello from support" }),
        )
        .await;
    assert_eq!(status, 201, "{greeted}");
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the poll answers soon after the greeting")
        .expect("poll task");
    let frames = answer["frames"].as_array().expect("frames").clone();
    let conv = of_type(&frames, "conversation.updated");
    assert_eq!(conv[0]["conversation"]["id"], greeted["conversation"]["id"]);
    let mut bodies: Vec<Value> = of_type(&frames, "message.history")
        .iter()
        .flat_map(|f| f["messages"].as_array().unwrap().clone())
        .collect();
    bodies.extend(
        of_type(&frames, "message.created")
            .iter()
            .map(|f| f["message"].clone()),
    );
    assert!(
        bodies.iter().any(|m| m["body"] == "Hello from support"),
        "the greeting in {frames:?}"
    );

    // The visitor answers over HTTP, into the same conversation.
    let sent = poller
        .send(json!({ "type": "message.send", "client_msg_id": "p1", "body": "Hi!" }))
        .await;
    let ack = of_type(&sent, "message.ack");
    assert_eq!(
        ack[0]["message"]["conversation_id"],
        greeted["conversation"]["id"]
    );
    assert_eq!(ack[0]["message"]["seq"], 2);
}

#[actix_web::test]
async fn long_polling_gets_typing_and_read_that_happened_between_polls() {
    let app = spawn().await;
    let peer = app.spawn_peer().await;
    let key = app.create_site().await;
    let agent = app.online_agent("Tess", 5).await;
    let mut agent_ws = app.agent_ws(&agent.token).await;
    let (poller, _) = Poller::start(&app, &key).await;
    let sent = poller
        .send(json!({ "type": "message.send", "client_msg_id": "p1", "body": "Hello?" }))
        .await;
    let conv = id(&of_type(&sent, "message.ack")[0]["message"]["conversation_id"]);
    // A first poll: the message, and the cursor.
    let (_, ev0) = poller.poll(0, 0, WAIT).await.expect("first poll answers");

    // No poll is waiting: the agent reads the message and starts typing (on another node).
    let (status, _) = peer
        .post(
            &format!("/api/conversations/{conv}/read"),
            &agent.token,
            json!({ "up_to_seq": 1 }),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = peer
        .post(
            &format!("/api/conversations/{conv}/typing"),
            &agent.token,
            json!({ "on": true }),
        )
        .await;
    assert_eq!(status, 204);

    // The next poll (on the first node) answers at once with both.
    let (frames, ev1) = eventually("the next poll to carry typing and read", || async {
        let (frames, ev) = poller.poll(1, ev0, WAIT).await?;
        (!of_type(&frames, "typing").is_empty() && !of_type(&frames, "message.read").is_empty())
            .then_some((frames, ev))
    })
    .await;
    assert_eq!(of_type(&frames, "typing")[0]["on"], true);
    assert_eq!(of_type(&frames, "typing")[0]["sender_type"], "agent");
    assert_eq!(of_type(&frames, "message.read")[0]["up_to_seq"], 1);
    assert!(ev1 > ev0);

    // With that cursor they are not repeated: the poll waits.
    assert!(
        poller
            .poll(1, ev1, Duration::from_millis(1500))
            .await
            .is_none(),
        "a poll with the new cursor waits for something new"
    );

    // Typing off between polls arrives too.
    let (status, _) = app
        .post(
            &format!("/api/conversations/{conv}/typing"),
            &agent.token,
            json!({ "on": false }),
        )
        .await;
    assert_eq!(status, 204);
    let (frames, _) = poller.poll(1, ev1, WAIT).await.expect("the poll answers");
    assert_eq!(of_type(&frames, "typing")[0]["on"], false);

    // And the other way: the polling visitor's typing and read reach the agent live.
    poller.send(json!({ "type": "typing", "on": true })).await;
    let t = agent_ws
        .recv_until_where("typing", |f| f["sender_type"] == "visitor")
        .await;
    assert_eq!(t["on"], true);
    assert_eq!(t["conversation_id"], conv.as_str());
    let (status, _) = app
        .reply(&agent.token, &conv, "r1", "How can I help?", false)
        .await;
    assert_eq!(status, 201);
    poller.send(json!({ "type": "read", "up_to_seq": 2 })).await;
    let r = agent_ws
        .recv_until_where("message.read", |f| f["sender_type"] == "visitor")
        .await;
    assert_eq!(r["up_to_seq"], 2);
}
