//! Observability (`cargo test monitoring`): a scenario, then a scrape in which every metric
//! moved by exactly what the scenario did (parsed from the text format); route labels are
//! patterns; `/readyz` follows PostgreSQL and Redis going away and coming back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::private_pg::PrivatePg;
use common::private_redis::PrivateRedis;
use common::{eventually, TestApp};
use reqwest::Method;
use serde_json::json;

/// Every sample of a scrape: `name{labels}` (as rendered) → value.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        out.insert(
            series.to_string(),
            value.parse::<f64>().expect("sample value"),
        );
    }
    out
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[actix_web::test]
async fn monitoring_scenario_moves_each_metric_by_exactly_what_happened() {
    let app = TestApp::spawn_with(|s| {
        s.visitor_burst = 3.0;
        s.visitor_rate = 0.001;
    })
    .await;
    let key = app.create_site().await;
    let agent = app.create_agent("Mo", 5).await;
    let admin = app.admin_token().await;
    let before = scrape(&app).await;

    // Logins: two good, one bad.
    app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    app.login(&agent.email, common::AGENT_PASSWORD).await;
    let (status, _) = app.login_raw(&agent.email, "wrong password").await;
    assert_eq!(status, 401);

    // A visitor: three messages pass, the fourth is rate limited, then one bad frame.
    let (mut v, _) = app.visitor(&key).await; // welcome + one ping/pong (sync)
    let connected = scrape(&app).await;
    assert_eq!(
        delta(
            &before,
            &connected,
            r#"websocket_connections{role="visitor"}"#
        ),
        1.0
    );
    let mut conv = String::new();
    for i in 0..3 {
        v.send_json(
            json!({"type": "message.send", "client_msg_id": format!("m{i}"), "body": "hello"}),
        )
        .await;
        conv = v.recv_until("message.ack").await["message"]["conversation_id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    v.send_json(json!({"type": "message.send", "client_msg_id": "m3", "body": "too fast"}))
        .await;
    assert_eq!(v.recv_until("error").await["code"], "rate_limited");
    v.send_text("{not json").await;
    assert_eq!(v.recv_until("error").await["code"], "bad_request");
    // An agent reply and a request for an id that does not exist.
    let (status, _) = app.reply(&admin, &conv, "r1", "hi", false).await;
    assert_eq!(status, 201);
    let (status, _) = app
        .get(
            &format!("/api/conversations/{}", uuid::Uuid::new_v4()),
            &admin,
        )
        .await;
    assert_eq!(status, 404);
    v.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    drop(v);
    eventually("visitor gauge back down", || {
        let app = &app;
        let before = &before;
        async move {
            let s = scrape(app).await;
            (delta(before, &s, r#"websocket_connections{role="visitor"}"#) == 0.0).then_some(())
        }
    })
    .await;
    let after = scrape(&app).await;

    let exact = [
        (r#"logins_total{outcome="ok"}"#, 2.0),
        (r#"logins_total{outcome="failed"}"#, 1.0),
        (r#"message_processed_total{sender_type="visitor"}"#, 3.0),
        (r#"message_processed_total{sender_type="agent"}"#, 1.0),
        (r#"rate_limited_total{kind="visitor_send"}"#, 1.0),
        (r#"websocket_errors_total{code="rate_limited"}"#, 1.0),
        (r#"websocket_errors_total{code="bad_request"}"#, 1.0),
        // ping (sync), three sends, the refused send, the bad frame
        (r#"websocket_frames_received_total{role="visitor"}"#, 6.0),
        (r#"db_writer_batch_size_sum"#, 4.0),
        (
            r#"http_requests_total{method="POST",route="/api/auth/login",status="200"}"#,
            2.0,
        ),
        (
            r#"http_requests_total{method="POST",route="/api/auth/login",status="401"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="POST",route="/api/conversations/{id}/messages",status="201"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="GET",route="/api/conversations/{id}",status="404"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_count{method="POST",route="/api/auth/login"}"#,
            3.0,
        ),
        (r#"websocket_connections{role="visitor"}"#, 0.0),
    ];
    for (series, want) in exact {
        assert_eq!(delta(&before, &after, series), want, "{series}");
    }
    // The websocket handshake is counted as a request on its route too.
    assert_eq!(
        delta(
            &before,
            &after,
            r#"http_requests_total{method="GET",route="/ws/visitor",status="101"}"#
        ),
        1.0
    );
    // Route labels are patterns: no id ever reaches a label.
    for series in after
        .keys()
        .filter(|k| k.starts_with("http_requests_total"))
    {
        assert!(
            !series.contains(&conv) && !series.contains("-4"),
            "raw path in a label: {series}"
        );
    }

    // Cache reads: the first /api/config of a fresh node misses L1 and L2, the next hits L1.
    let fresh = app.spawn_peer().await;
    let b = scrape(&fresh).await;
    for _ in 0..2 {
        let (status, _) = fresh
            .request(Method::GET, &format!("/api/config?site={key}"), None, None)
            .await;
        assert_eq!(status, 200);
    }
    let a = scrape(&fresh).await;
    assert_eq!(delta(&b, &a, r#"cache_misses_total{level="l1"}"#), 1.0);
    assert_eq!(delta(&b, &a, r#"cache_hits_total{level="l1"}"#), 1.0);
    // The first node read this site through Redis already: the fresh node finds it in L2.
    assert_eq!(delta(&b, &a, r#"cache_hits_total{level="l2"}"#), 1.0);
}

#[actix_web::test]
async fn monitoring_readyz_follows_postgres_and_redis() {
    let mut pg = PrivatePg::start().await;
    let redis_port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start_on(redis_port).await;
    let (pg_url, redis_url) = (pg.url("postgres"), redis.url());
    let app = TestApp::spawn_with(|s| {
        s.database_url = pg_url.clone();
        s.redis_url = Some(redis_url.clone());
        s.db_timeout_secs = 2;
    })
    .await;
    let ready = |want_status: u16, pg: &'static str, redis: &'static str| {
        let app = &app;
        async move {
            eventually(
                &format!("readyz {want_status} pg={pg} redis={redis}"),
                || async {
                    let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
                    (status == want_status && body["postgres"] == pg && body["redis"] == redis)
                        .then_some(())
                },
            )
            .await
        }
    };
    ready(200, "ok", "ok").await;

    redis.stop();
    ready(503, "ok", "down").await;
    let _redis = PrivateRedis::start_on(redis_port).await;
    ready(200, "ok", "ok").await;

    pg.stop();
    ready(503, "down", "ok").await;
    // Requests that need the database answer `unavailable`, quickly.
    let started = std::time::Instant::now();
    let (status, body) = app
        .login_raw(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(started.elapsed() < Duration::from_secs(5));
    pg.resume().await;
    ready(200, "ok", "ok").await;
    // And the node works again without a restart.
    app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
}
