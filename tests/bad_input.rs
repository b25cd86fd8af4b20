//! SPEC §5: every class of bad input gets its error frame or HTTP status, a connection
//! stays open unless it keeps abusing, and another visitor and agent on the same node keep
//! chatting throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// A visitor and an agent chatting on the same node while somebody else misbehaves.
struct Bystander {
    visitor: WsClient,
    agent: WsClient,
    token: String,
    conversation: String,
    rounds: usize,
}

impl Bystander {
    async fn join(app: &TestApp, key: &str) -> Bystander {
        let agent = app.online_agent("Bystander", 50).await;
        let agent_ws = app.agent_ws(&agent.token).await;
        let (mut visitor, _) = app.visitor(key).await;
        let first = send_and_ack(&mut visitor, "b-0", "bystander here").await;
        Bystander {
            visitor,
            agent: agent_ws,
            token: agent.token,
            conversation: id(&first["conversation_id"]),
            rounds: 0,
        }
    }

    /// One round trip: visitor → agent socket, agent (HTTP) → visitor socket.
    async fn still_chatting(&mut self, app: &TestApp) {
        self.rounds += 1;
        let n = self.rounds;
        let body = format!("still chatting {n}");
        let m = send_and_ack(&mut self.visitor, &format!("b-{n}"), &body).await;
        assert_eq!(m["conversation_id"], self.conversation.as_str());
        recv_message(&mut self.agent, &body).await;
        let reply = format!("reply {n}");
        let (status, _) = app
            .reply(
                &self.token,
                &self.conversation,
                &format!("r-{n}"),
                &reply,
                false,
            )
            .await;
        assert_eq!(status, 201);
        recv_message(&mut self.visitor, &reply).await;
    }
}

/// Sends `frame` and answers the error frame it earns.
async fn error_for(ws: &mut WsClient, frame: Message) -> Value {
    ws.send(frame).await;
    ws.recv_until("error").await
}

fn text(s: impl Into<String>) -> Message {
    Message::text(s.into())
}

#[actix_web::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_open() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let (mut bad, welcome) = app.visitor(&key).await;
    let bad_id = id(&welcome["visitor"]["id"]);

    // Malformed JSON, JSON that is not an object, no or unknown type.
    for junk in [
        "{not json",
        "",
        "[]",
        "42",
        "\"hi\"",
        "{}",
        r#"{"type":"nope"}"#,
        "null",
    ] {
        let e = error_for(&mut bad, text(junk)).await;
        assert_eq!(e["code"], "bad_request", "{junk:?}: {e}");
        assert_eq!(e["ref"], Value::Null);
        assert!(e["message"].as_str().unwrap().len() > 3);
    }
    assert!(bad.is_open().await);
    bystander.still_chatting(&app).await;

    // Wrong field types: the offending client_msg_id comes back as `ref`.
    let e = error_for(
        &mut bad,
        text(r#"{"type":"message.send","client_msg_id":"x1","body":5}"#),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(e["ref"], "x1");
    let e = error_for(
        &mut bad,
        text(r#"{"type":"message.send","client_msg_id":"x2"}"#),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(e["ref"], "x2");
    for wrong in [
        r#"{"type":"typing","on":"yes"}"#,
        r#"{"type":"resume","after_seq":"ten"}"#,
        r#"{"type":"read","up_to_seq":-1}"#,
        r#"{"type":"rating","score":"five"}"#,
        r#"{"type":"profile.update","name":7}"#,
        r#"{"type":"message.send","client_msg_id":12,"body":"hi"}"#,
    ] {
        let e = error_for(&mut bad, text(wrong)).await;
        assert_eq!(e["code"], "bad_request", "{wrong}: {e}");
    }
    assert!(bad.is_open().await);
    bystander.still_chatting(&app).await;

    // Body and client_msg_id limits.
    let e = error_for(
        &mut bad,
        text(json!({"type":"message.send","client_msg_id":"e1","body":"  \n\t "}).to_string()),
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad_request"), Some("e1"))
    );
    let e = error_for(
        &mut bad,
        text(
            json!({"type":"message.send","client_msg_id":"l1","body":"字".repeat(4001)})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("too_large"), Some("l1"))
    );
    let long_id = "k".repeat(65);
    let e = error_for(
        &mut bad,
        text(json!({"type":"message.send","client_msg_id":long_id,"body":"hi"}).to_string()),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(
        e["ref"],
        "k".repeat(64),
        "ref is the id cut to 64 characters"
    );
    let e = error_for(
        &mut bad,
        text(json!({"type":"message.send","client_msg_id":"","body":"hi"}).to_string()),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    // The limit itself is fine: 4000 characters (12 000 bytes here), surrounding white space
    // trimmed.
    let max = "字".repeat(4000);
    let ok = send_and_ack(&mut bad, "max", &format!("  {max}  ")).await;
    assert_eq!(ok["body"].as_str().unwrap().chars().count(), 4000);
    bystander.still_chatting(&app).await;

    // Frames over 16 KiB: too_large, and the connection stays.
    let huge = json!({"type":"message.send","client_msg_id":"h1","body":"x".repeat(17 * 1024)});
    let e = error_for(&mut bad, text(huge.to_string())).await;
    assert_eq!(e["code"], "too_large");
    assert!(bad.is_open().await);
    // Fragmented messages are put together first: a small one works, a big one is refused.
    let ping = br#"{"type":"ping"}"#;
    bad.send(Message::Frame(Frame::message(
        ping[..5].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    bad.send(Message::Frame(Frame::message(
        ping[5..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    assert_eq!(bad.recv_until("pong").await["type"], "pong");
    let chunk = vec![b' '; 10 * 1024];
    bad.send(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    bad.send(Message::Frame(Frame::message(
        chunk,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    assert_eq!(bad.recv_until("error").await["code"], "too_large");
    assert!(bad.is_open().await);
    bystander.still_chatting(&app).await;

    // Binary frames.
    let e = error_for(&mut bad, Message::binary(vec![0u8, 159, 146, 150])).await;
    assert_eq!(e["code"], "bad_request");
    assert!(bad.is_open().await);

    // Invalid UTF-8 in a text frame (raw bytes; tungstenite checks nothing when sending a
    // raw frame).
    let e = error_for(
        &mut bad,
        Message::Frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        )),
    )
    .await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(
        bad.is_open().await,
        "invalid UTF-8 is an error frame, not a close"
    );
    bystander.still_chatting(&app).await;

    // A visitor cannot write into, or read, somebody else's conversation: a named
    // conversation_id is ignored, and so is `private`.
    let other = bystander.conversation.clone();
    let own = send_and_ack(&mut bad, "x-1", "hello").await;
    assert_ne!(own["conversation_id"], other.as_str());
    bad.send_json(json!({"type":"message.send","client_msg_id":"x-2","body":"sneaky","conversation_id":other,"private":true}))
        .await;
    let ack = bad.recv_until("message.ack").await;
    assert_eq!(ack["message"]["conversation_id"], own["conversation_id"]);
    assert_eq!(ack["message"]["private"], false);
    bad.send_json(json!({"type":"resume","after_seq":0,"conversation_id":other}))
        .await;
    let h = bad.recv_until("message.history").await;
    assert_eq!(h["conversation_id"], own["conversation_id"]);
    assert!(!h.to_string().contains("still chatting"));
    bystander.still_chatting(&app).await;
    let theirs = app.history(&bystander.token, &other).await;
    assert!(!theirs.iter().any(|m| m["body"] == "sneaky"));

    // Only the valid messages of the misbehaving visitor were stored.
    let stored = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM messages WHERE sender_id = '{bad_id}'"
        ))
        .await;
    assert_eq!(stored, 3);
}

#[actix_web::test]
async fn bad_ids_and_frames_from_agents_are_refused_without_harm() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let admin = app.admin_token().await;
    let mut agent = app.agent_ws(&admin).await;

    // No conversation named, a malformed id, an unknown one.
    let e = error_for(
        &mut agent,
        text(json!({"type":"message.send","client_msg_id":"a1","body":"hi"}).to_string()),
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("bad_request"), Some("a1"))
    );
    let e = error_for(
        &mut agent,
        text(json!({"type":"message.send","client_msg_id":"a2","body":"hi","conversation_id":"nope"}).to_string()),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    let e = error_for(
        &mut agent,
        text(json!({"type":"message.send","client_msg_id":"a3","body":"hi","conversation_id":uuid::Uuid::new_v4()}).to_string()),
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not_found"), Some("a3"))
    );
    let e = error_for(
        &mut agent,
        text(
            json!({"type":"resume","after_seq":0,"conversation_id":uuid::Uuid::new_v4()})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(e["code"], "not_found");
    // Visitor-only frames.
    let e = error_for(
        &mut agent,
        text(json!({"type":"profile.update","name":"x"}).to_string()),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    let e = error_for(
        &mut agent,
        text(json!({"type":"rating","score":5}).to_string()),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert!(agent.is_open().await);
    bystander.still_chatting(&app).await;

    // Over HTTP, ids that are not UUIDs are simply not found.
    for (method, path) in [
        (Method::GET, "/api/conversations/not-a-uuid"),
        (Method::GET, "/api/conversations/123/messages"),
        (Method::POST, "/api/conversations/zzz/resolve"),
        (Method::POST, "/api/conversations/zzz/reopen"),
        (
            Method::POST,
            "/api/conversations/%27%3B%20DROP%20TABLE/assign",
        ),
    ] {
        let (status, e) = app
            .request(method.clone(), path, Some(&admin), Some(&json!({})))
            .await;
        assert_eq!(status, 404, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "not_found");
    }
    let (status, e) = app.reply(&admin, "not-a-uuid", "c1", "hello", false).await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = app
        .request(
            Method::PATCH,
            "/api/agents/xyz",
            Some(&admin),
            Some(&json!({ "name": "X" })),
        )
        .await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = app
        .get(
            &format!("/api/conversations/{}", uuid::Uuid::new_v4()),
            &admin,
        )
        .await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = app.get("/api/no/such/route", &admin).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "not_found");
    bystander.still_chatting(&app).await;
}

#[actix_web::test]
async fn twenty_invalid_frames_in_a_row_close_the_connection_with_1008() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let (mut bad, _) = app.visitor(&key).await;

    // 19 in a row, then a valid frame: the streak starts over.
    for _ in 0..19 {
        bad.send_text("{oops").await;
    }
    for _ in 0..19 {
        assert_eq!(bad.recv_until("error").await["code"], "bad_request");
    }
    assert!(bad.is_open().await);
    // 20 in a row: closed with 1008 (policy violation).
    for _ in 0..20 {
        bad.send_text(r#"{"type":"nope"}"#).await;
    }
    let mut errors = 0;
    let code = loop {
        match bad.recv_within(WAIT).await {
            Received::Json(v) if v["type"] == "error" => errors += 1,
            Received::Json(v) => panic!("unexpected {v}"),
            Received::Closed(code) => break code,
            Received::Timeout => panic!("not closed after 20 invalid frames"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!(errors, 20);
    bystander.still_chatting(&app).await;
    // The visitor may come back.
    let (mut again, _) = app.visitor(&key).await;
    assert!(again.is_open().await);
}

#[actix_web::test]
async fn a_frame_over_the_codec_limit_closes_with_1009_and_nothing_else_suffers() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let (mut bad, _) = app.visitor(&key).await;

    bad.send_text("x".repeat(2 * 1024 * 1024)).await;
    let mut saw_error = None;
    let code = loop {
        match bad.recv_within(WAIT).await {
            Received::Json(v) if v["type"] == "error" => saw_error = Some(v),
            Received::Json(v) => panic!("unexpected {v}"),
            Received::Closed(code) => break code,
            Received::Timeout => panic!("a 2 MiB frame did not close the connection"),
        }
    };
    assert_eq!(code, Some(1009), "message too big");
    assert_eq!(
        saw_error.expect("an error frame first")["code"],
        "too_large"
    );
    bystander.still_chatting(&app).await;
    let (status, _) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn visitor_sends_are_rate_limited_with_their_ref_and_nothing_is_stored() {
    let app = TestApp::spawn_with(|s| {
        s.visitor_burst = 5.0;
        // One token per 10 s: nothing refills while the test runs, however slow the machine.
        s.visitor_rate = 0.1;
    })
    .await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let (mut fast, welcome) = app.visitor(&key).await;
    let fast_id = id(&welcome["visitor"]["id"]);

    for i in 0..8 {
        fast.send_json(json!({"type":"message.send","client_msg_id":format!("f-{i}"),"body":format!("spam {i}")}))
            .await;
    }
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    while acked.len() + refused.len() < 8 {
        let f = fast.recv_json().await;
        match f["type"].as_str().unwrap() {
            "message.ack" => acked.push(id(&f["client_msg_id"])),
            "error" => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                refused.push(id(&f["ref"]));
            }
            _ => {}
        }
    }
    acked.sort();
    refused.sort();
    assert_eq!(acked, ["f-0", "f-1", "f-2", "f-3", "f-4"], "the burst");
    assert_eq!(refused, ["f-5", "f-6", "f-7"]);
    let stored: Vec<String> = app
        .sql_rows(&format!(
            "SELECT client_msg_id FROM messages WHERE sender_id = '{fast_id}' ORDER BY seq"
        ))
        .await
        .iter()
        .map(|r| id(&r["client_msg_id"]))
        .collect();
    assert_eq!(stored, ["f-0", "f-1", "f-2", "f-3", "f-4"]);
    assert!(fast.is_open().await, "refused sends are not a disconnect");

    // Other visitors have their own budget. (Refilling is timed: the token bucket's unit
    // tests cover it.)
    bystander.still_chatting(&app).await;
    // While the budget is spent, every further send is refused and stores nothing.
    fast.send_json(json!({"type":"message.send","client_msg_id":"f-9","body":"more"}))
        .await;
    let e = fast.recv_until("error").await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("rate_limited"), Some("f-9"))
    );
    assert_eq!(
        app.sql_i64(&format!(
            "SELECT count(*) AS n FROM messages WHERE sender_id = '{fast_id}'"
        ))
        .await,
        5
    );
}

#[actix_web::test]
async fn the_visitor_handshake_checks_site_and_origin() {
    let app = TestApp::spawn().await;
    let open_key = app.create_site().await;
    let site = app
        .create_site_with(json!({
            "name": "Locked",
            "allowed_origins": ["https://shop.example.com"],
            "greeting": "Locked site",
        }))
        .await;
    let key = id(&site["widget_key"]);
    let mut bystander = Bystander::join(&app, &open_key).await;
    let url = app.ws_url(&format!("/ws/visitor?site={key}"));

    for origin in [
        Some("https://evil.example.com"),
        Some("http://shop.example.com"),
        None,
    ] {
        let refused = WsClient::connect(&url, origin)
            .await
            .err()
            .unwrap_or_else(|| panic!("origin {origin:?} was let in"));
        assert_eq!(refused.status, 403, "origin {origin:?}");
        assert_eq!(refused.body["error"]["code"], "forbidden");
    }
    bystander.still_chatting(&app).await;
    for origin in ["https://shop.example.com", "HTTPS://Shop.Example.com/"] {
        let mut ws = WsClient::connect(&url, Some(origin))
            .await
            .unwrap_or_else(|r| panic!("origin {origin} refused: {r:?}"));
        let welcome = ws.recv_json().await;
        assert_eq!(welcome["type"], "session.welcome");
        assert_eq!(welcome["greeting"], "Locked site");
    }
    // Sites without a list take any page.
    let mut ws = WsClient::connect(
        &app.ws_url(&format!("/ws/visitor?site={open_key}")),
        Some("https://anywhere.example.org"),
    )
    .await
    .expect("open site");
    assert_eq!(ws.recv_json().await["type"], "session.welcome");

    // Unknown or missing site keys.
    let refused = WsClient::connect(&app.ws_url("/ws/visitor?site=no-such-key"), None)
        .await
        .err()
        .expect("unknown site");
    assert_eq!(refused.status, 404);
    let refused = WsClient::connect(&app.ws_url("/ws/visitor"), None)
        .await
        .err()
        .expect("no site");
    assert_eq!(refused.status, 400);
    // A token from nowhere is no error: the visitor simply starts afresh.
    let (_, welcome) = app
        .visitor_again(&open_key, "0123456789abcdef0123456789abcdef")
        .await;
    assert_ne!(welcome["token"], "0123456789abcdef0123456789abcdef");
    assert_eq!(welcome["conversation"], Value::Null);
    bystander.still_chatting(&app).await;
}

#[actix_web::test]
async fn bad_http_bodies_get_json_errors_with_stable_codes() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let mut bystander = Bystander::join(&app, &key).await;
    let admin = app.admin_token().await;
    let conv = bystander.conversation.clone();
    let path = format!("/api/conversations/{conv}/messages");

    let raw = |body: &'static str, content_type: &'static str| {
        let req = app
            .http
            .post(app.url(&path))
            .bearer_auth(&admin)
            .header("Content-Type", content_type)
            .body(body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let v: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null);
            (status, v)
        }
    };
    let (status, e) = raw("{\"body\": ", "application/json").await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "bad_request", "{e}");
    assert!(e["error"]["message"].is_string());
    let (status, e) = raw("{\"body\": 5}", "application/json").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = raw("[1,2]", "application/json").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = raw("{\"body\":\"hi\"}", "text/plain").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    bystander.still_chatting(&app).await;

    // Body limits, as on the socket.
    let (status, e) = app.reply(&admin, &conv, "e1", " \n ", false).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = app
        .reply(&admin, &conv, "l1", &"a".repeat(4001), false)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    let (status, e) = app.reply(&admin, &conv, &"k".repeat(65), "hi", false).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, m) = app
        .reply(&admin, &conv, "ok-4000", &"a".repeat(4000), false)
        .await;
    assert_eq!(status, 201, "{m}");
    // A JSON body over 64 KiB.
    let (status, e) = app
        .post(
            &path,
            &admin,
            json!({ "client_msg_id": "big", "body": "a".repeat(70_000) }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    // Query parameters.
    let (status, e) = app.get(&format!("{path}?limit=0"), &admin).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = app.get(&format!("{path}?after_seq=-1"), &admin).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = app.get(&format!("{path}?limit=abc"), &admin).await;
    assert_eq!(status, 400);
    let (status, e) = app
        .put("/api/me/status", &admin, json!({ "status": "sleeping" }))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = app
        .post(
            "/api/sites",
            &admin,
            json!({ "name": "x", "allowed_origins": ["not a url"] }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = app
        .post(
            "/api/agents",
            &admin,
            json!({ "email": "short@kefu.test", "name": "Short", "password": "123" }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = app
        .post(
            "/api/agents",
            &admin,
            json!({ "email": ADMIN_EMAIL, "name": "Dup", "password": "password-123" }),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    // Nothing but the valid reply was stored.
    let history = app.history(&admin, &conv).await;
    let ids: Vec<&str> = history
        .iter()
        .filter_map(|m| m["client_msg_id"].as_str())
        .filter(|c| !c.starts_with("b-") && !c.starts_with("r-"))
        .collect();
    assert_eq!(ids, ["ok-4000"]);
    bystander.still_chatting(&app).await;
}
