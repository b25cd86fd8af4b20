//! Operations: health and readiness, the public widget configuration, stats, heartbeats,
//! slow clients, running without Redis, and the graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::MaybeTlsStream;

#[actix_web::test]
async fn health_readiness_and_the_public_widget_configuration() {
    let app = TestApp::spawn().await;
    let (status, _) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, ready) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["redis"], "ok");

    let key = app.create_site().await;
    let path = format!("/api/config?site={key}");
    let (status, cfg) = app.request(Method::GET, &path, None, None).await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["greeting"], "Hi! How can we help?");
    assert_eq!(cfg["offline_message"], "We are away; leave a message.");
    assert_eq!(cfg["agents_online"], false);

    // An agent goes online: the widget says so (no stale cache).
    let alice = app.online_agent("Alice", 5).await;
    let (_, cfg) = app.request(Method::GET, &path, None, None).await;
    assert_eq!(cfg["agents_online"], true);
    let (_, welcome) = app.visitor(&key).await;
    assert_eq!(welcome["agents_online"], true);
    app.set_status(&alice.token, "away").await;
    let (_, cfg) = app.request(Method::GET, &path, None, None).await;
    assert_eq!(cfg["agents_online"], false);

    // A changed greeting shows at once.
    let admin = app.admin_token().await;
    let (_, sites) = app.get("/api/sites", &admin).await;
    let site_id = id(&sites["items"][0]["id"]);
    let (status, _) = app
        .request(
            Method::PATCH,
            &format!("/api/sites/{site_id}"),
            Some(&admin),
            Some(&json!({ "greeting": "Welcome back!" })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, cfg) = app.request(Method::GET, &path, None, None).await;
    assert_eq!(cfg["greeting"], "Welcome back!");

    let (status, e) = app
        .request(Method::GET, "/api/config?site=no-such-key", None, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "not_found");
    let (status, e) = app.request(Method::GET, "/api/config", None, None).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "bad_request");
}

#[actix_web::test]
async fn stats_count_conversations_by_status_the_queue_and_agents_online() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let mut visitors = Vec::new();
    let mut convs = Vec::new();
    for i in 0..3 {
        let (mut v, _) = app.visitor(&key).await;
        let m = send_and_ack(&mut v, "1", &format!("hello {i}")).await;
        convs.push(id(&m["conversation_id"]));
        visitors.push(v);
    }
    let (status, s) = app.get("/api/stats", &admin).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (
            &s["pending"],
            &s["open"],
            &s["resolved"],
            &s["queue_length"],
            &s["agents_online"]
        ),
        (&json!(3), &json!(0), &json!(0), &json!(3), &json!(0))
    );
    assert_eq!(s["median_first_response_seconds"], Value::Null);

    // Alice takes one (capacity 1), answers it and resolves it; the next one is hers.
    let alice = app.online_agent("Alice", 1).await;
    let first = convs[0].clone();
    eventually("the oldest conversation assigned", || async {
        (app.conversation(&admin, &first).await["status"] == "open").then_some(())
    })
    .await;
    let (status, _) = app.reply(&alice.token, &first, "a1", "Hello!", false).await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post(
            &format!("/api/conversations/{first}/resolve"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let second = convs[1].clone();
    eventually("the next conversation assigned", || async {
        (app.conversation(&admin, &second).await["status"] == "open").then_some(())
    })
    .await;
    let (_, s) = app.get("/api/stats", &admin).await;
    assert_eq!(
        (
            &s["pending"],
            &s["open"],
            &s["resolved"],
            &s["queue_length"],
            &s["agents_online"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1), &json!(1))
    );
    assert!(s["median_first_response_seconds"].as_f64().unwrap() >= 0.0);
    assert!(s["median_resolution_seconds"].as_f64().unwrap() >= 0.0);
}

#[actix_web::test]
async fn without_redis_a_node_runs_alone_and_says_so() {
    let app = TestApp::spawn_with(|s| s.redis_url = None).await;
    let (status, ready) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["redis"], "disabled");

    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let mut console = app.agent_ws(&alice.token).await;
    let (mut visitor, _) = app.visitor(&key).await;
    let m = send_and_ack(&mut visitor, "v1", "hello without redis").await;
    recv_message(&mut console, "hello without redis").await;
    let conv = id(&m["conversation_id"]);
    agent_send_and_ack(&mut console, &conv, "a1", "hi!", false).await;
    recv_message(&mut visitor, "hi!").await;
}

#[actix_web::test]
async fn the_server_pings_every_heartbeat_and_live_clients_stay_connected() {
    let app = TestApp::spawn_with(|s| {
        s.heartbeat_secs = 1;
        s.client_timeout_secs = 2;
    })
    .await;
    let key = app.create_site().await;
    let (mut visitor, _) = app.visitor(&key).await;
    // Reading answers the pings (tungstenite pongs by itself); 3.5 s is past the timeout.
    visitor
        .expect_none(Duration::from_millis(3500), |_| true, "a frame")
        .await;
    assert!(visitor.pings >= 2, "pings seen: {}", visitor.pings);
    assert!(
        !visitor.closed,
        "a client answering pings is not dropped: {:?}",
        visitor.close
    );
    assert!(visitor.is_open().await);
}

#[actix_web::test]
async fn a_silent_client_is_dropped_after_the_client_timeout() {
    let app = TestApp::spawn_with(|s| {
        s.heartbeat_secs = 1;
        s.client_timeout_secs = 1;
    })
    .await;
    let key = app.create_site().await;
    let mut silent = WsClient::connect(&app.ws_url(&format!("/ws/visitor?site={key}")), None)
        .await
        .expect("handshake");
    // Not reading means not answering pings either.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(silent.expect_close(WAIT).await, Some(1001));
    let series = r#"websocket_connections{role="visitor"}"#;
    eventually("the connection gauge back to 0", || async {
        (app.metric(series).await == 0.0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_dropped_connection_is_not_counted_as_a_client_error() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let errors = r#"websocket_errors_total{code="bad_request"}"#;
    let before = app.metric(errors).await;
    for i in 0..3 {
        let (mut v, _) = app.visitor(&key).await;
        send_and_ack(&mut v, "m", &format!("bye {i}")).await;
        // The tab closes without a close frame.
        drop(v);
    }
    let series = r#"websocket_connections{role="visitor"}"#;
    eventually("the connection gauge back to 0", || async {
        (app.metric(series).await == 0.0).then_some(())
    })
    .await;
    assert_eq!(app.metric(errors).await, before);
}

/// An agent socket whose kernel receive buffer is tiny, so that a client that stops reading
/// fills up quickly.
async fn slow_agent(app: &TestApp, token: &str) -> WsClient {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = sock.connect(app.addr).await.expect("connect");
    let req = app
        .ws_url(&format!("/ws/agent?token={token}"))
        .into_client_request()
        .expect("request");
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .expect("agent handshake");
    let mut ws = WsClient::from_stream(ws);
    ws.sync().await;
    ws
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_node_stays_responsive() {
    const QUEUE: usize = 20;
    let app = TestApp::spawn_with(|s| s.outgoing_queue = QUEUE).await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let slow = app.create_agent("Slow", 5).await;
    let healthy = app.online_agent("Healthy", 5).await;
    let mut healthy_ws = app.agent_ws(&healthy.token).await;
    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v0", "hello").await;
    let conv = id(&first["conversation_id"]);
    // A long history of big messages (200 × ~12 KB).
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, private, body) \
         SELECT gen_random_uuid(), '{conv}', s, 'agent', false, repeat('字', 4000) \
         FROM generate_series(2, 201) s"
    ))
    .await;
    app.sql_exec(&format!(
        "UPDATE conversations SET last_seq = 201 WHERE id = '{conv}'"
    ))
    .await;

    // The slow agent asks for ~10 MB of history and never reads it: the socket fills up and
    // the server can no longer write to it.
    let mut slow_ws = slow_agent(&app, &slow.token).await;
    let sent = r#"websocket_frames_sent_total{role="agent"}"#;
    let before = app.metric(sent).await;
    for _ in 0..4 {
        slow_ws
            .send_json(json!({ "type": "resume", "after_seq": 0, "conversation_id": conv }))
            .await;
    }
    // Two history frames (~5 MB) are more than the kernel buffers take (4 MB send buffer at
    // most, 4 KB receive buffer): once the server has written them, it is stuck.
    eventually("two history frames written", || async {
        (app.metric(sent).await >= before + 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Meanwhile events keep coming for every agent: far more than the slow one's queue.
    const EVENTS: usize = 3 * QUEUE;
    for i in 0..EVENTS {
        let (status, _) = app
            .post(
                &format!("/api/conversations/{conv}/typing"),
                &admin,
                json!({ "on": i % 2 == 0 }),
            )
            .await;
        assert_eq!(status, 204);
    }
    // The node stays responsive for everybody else.
    for _ in 0..EVENTS {
        healthy_ws.recv_until("typing").await;
    }
    let m = send_and_ack(&mut visitor, "v1", "still there?").await;
    recv_message(&mut healthy_ws, "still there?").await;
    let (status, reply) = app.reply(&healthy.token, &conv, "h1", "yes", false).await;
    assert_eq!(status, 201, "{reply}");
    recv_message(&mut visitor, "yes").await;
    assert!(m["seq"].as_i64().unwrap() > 201);
    let (status, _) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);

    // When the slow client reads again it finds its history, at most a queue's worth of
    // the later events (the rest were dropped, not buffered), and a 1008 close.
    let mut histories = 0;
    let mut typing = 0;
    let code = loop {
        match slow_ws.recv_within(Duration::from_secs(20)).await {
            Received::Json(v) if v["type"] == "message.history" => histories += 1,
            Received::Json(v) if v["type"] == "typing" => typing += 1,
            Received::Json(_) => {}
            Received::Closed(code) => break code,
            Received::Timeout => panic!("the slow client was never cut off"),
        }
    };
    assert_eq!(code, Some(1008), "{:?}", slow_ws.close);
    assert_eq!(
        slow_ws.close.as_ref().map(|c| c.reason.as_str()),
        Some("too slow")
    );
    assert!((2..=4).contains(&histories), "{histories} history frames");
    assert!(
        typing <= QUEUE,
        "{typing} of {EVENTS} events queued for a client that did not read"
    );
    assert_eq!(app.metric("slow_client_disconnects_total").await, 1.0);
    // The healthy agent was never cut off.
    assert!(healthy_ws.is_open().await);
}

#[actix_web::test]
async fn a_graceful_stop_closes_sockets_with_1001_and_keeps_every_acked_message() {
    let mut app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let mut console = app.agent_ws(&alice.token).await;
    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v0", "before the stop").await;
    let conv = id(&first["conversation_id"]);

    // More messages in flight while the node stops.
    for i in 1..=10 {
        visitor
            .send_json(json!({"type":"message.send","client_msg_id":format!("v{i}"),"body":format!("in flight {i}")}))
            .await;
    }
    app.stop().await;

    let mut acked = vec![id(&first["id"])];
    let code = loop {
        match visitor.recv_within(WAIT).await {
            Received::Json(v) if v["type"] == "message.ack" => acked.push(id(&v["message"]["id"])),
            Received::Json(_) => {}
            Received::Closed(code) => break code,
            Received::Timeout => panic!("the visitor socket was not closed"),
        }
    };
    assert_eq!(code, Some(1001), "going away: reconnect elsewhere");
    assert_eq!(console.expect_close(WAIT).await, Some(1001));

    // Every acknowledged message is stored.
    let stored: Vec<String> = app
        .sql_rows(&format!(
            "SELECT id FROM messages WHERE conversation_id = '{conv}'"
        ))
        .await
        .iter()
        .map(|r| id(&r["id"]))
        .collect();
    for a in &acked {
        assert!(stored.contains(a), "acked message {a} lost");
    }
    // Nobody is listening any more.
    assert!(app.http.get(app.url("/healthz")).send().await.is_err());
}
