//! Issue #9, customer-service workflow: business hours (widget config, welcome, the queue
//! waiting outside them), CSAT ratings (one per conversation, changeable for a while,
//! averaged), identity verification (one visitor per verified user on every device, forged
//! identities refused) and the visitor attributes route of `kefu.setAttributes`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, Utc};
use common::*;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

/// What the host's server computes: hex HMAC-SHA256(secret, user_id).
fn user_hash(secret: &str, user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn all_day_every_day() -> Value {
    let day = json!([{ "open": "00:00", "close": "24:00" }]);
    json!({ "mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day })
}

async fn patch_site(app: &TestApp, site_id: &str, body: Value) -> (u16, Value) {
    let admin = app.admin_token().await;
    app.request(
        Method::PATCH,
        &format!("/api/sites/{site_id}"),
        Some(&admin),
        Some(&body),
    )
    .await
}

async fn config(app: &TestApp, key: &str) -> Value {
    let (status, c) = app
        .request(Method::GET, &format!("/api/config?site={key}"), None, None)
        .await;
    assert_eq!(status, 200, "{c}");
    c
}

// ---------------------------------------------------------------------------------------
// Business hours
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn outside_business_hours_the_widget_is_told_and_the_queue_waits_until_opening() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    // Open all day every day, except today (UTC): closed now, opens at midnight UTC.
    // Computed from the clock, so the test holds whenever it runs.
    let today = Utc::now().date_naive();
    let site = app
        .create_site_with(json!({
            "name": "Shop",
            "offline_message": "We are closed. Leave your email and we will write back.",
            "business_hours": {
                "time_zone": "UTC",
                "weekly": all_day_every_day(),
                "closed_dates": [today.to_string()],
            },
        }))
        .await;
    let key = site["widget_key"].as_str().unwrap().to_string();
    let site_id = id(&site["id"]);
    assert_eq!(site["business_hours"]["time_zone"], "UTC");

    let c = config(&app, &key).await;
    assert_eq!(c["within_business_hours"], false, "{c}");
    let opens = (today + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let next: chrono::DateTime<Utc> = c["next_open_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next, opens);
    assert_eq!(
        c["offline_message"],
        "We are closed. Leave your email and we will write back."
    );

    // An agent is online, yet the visitor's conversation waits in the queue.
    let alice = app.online_agent("Alice", 5).await;
    let (mut visitor, welcome) = app.visitor(&key).await;
    assert_eq!(welcome["within_business_hours"], false);
    assert_eq!(welcome["next_open_at"], c["next_open_at"]);
    let m = send_and_ack(&mut visitor, "v-1", "Is anyone there?").await;
    let conv = id(&m["conversation_id"]);
    // The assigner runs on every new conversation and every 5 s: give it two rounds.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let waiting = app.conversation(&admin, &conv).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["assignee"], Value::Null);
    let (_, stats) = app.get("/api/stats", &admin).await;
    assert_eq!(stats["queue_length"], 1);

    // The visitor leaves an email; agents see it on the conversation.
    visitor
        .send_json(json!({ "type": "profile.update", "email": "mei@example.com" }))
        .await;
    visitor.recv_until("visitor.updated").await;
    let seen = app.conversation(&alice.token, &conv).await;
    assert_eq!(seen["visitor"]["email"], "mei@example.com");

    // Agents may still pick a waiting conversation up by hand.
    let (mut other, _) = app.visitor(&key).await;
    let m2 = send_and_ack(&mut other, "o-1", "Me too").await;
    let conv2 = id(&m2["conversation_id"]);
    let (status, claimed) = app
        .post(
            &format!("/api/conversations/{conv2}/assign"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["status"], "open");

    // Opening time (here: the closed date is taken out): auto-assignment resumes.
    let (status, updated) = patch_site(
        &app,
        &site_id,
        json!({ "business_hours": {
            "time_zone": "UTC", "weekly": all_day_every_day(), "closed_dates": [] } }),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(config(&app, &key).await["within_business_hours"], true);
    let assigned = eventually("the waiting conversation assigned", || async {
        let c = app.conversation(&admin, &conv).await;
        (c["status"] == "open").then_some(c)
    })
    .await;
    assert_eq!(assigned["assignee"]["id"], alice.id.as_str());
    // And the visitor hears about it.
    visitor
        .recv_until_where("conversation.updated", |f| {
            f["conversation"]["status"] == "open"
        })
        .await;

    // No schedule at all: always open.
    let (status, cleared) = patch_site(&app, &site_id, json!({ "business_hours": null })).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["business_hours"], Value::Null);
    let c = config(&app, &key).await;
    assert_eq!(c["within_business_hours"], true);
    assert_eq!(c["next_open_at"], Value::Null);
}

#[actix_web::test]
async fn business_hours_are_validated_with_clear_errors() {
    let app = TestApp::spawn().await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let site_id = id(&site["id"]);
    let cases = [
        (
            json!({ "time_zone": "Mars/Olympus", "weekly": {} }),
            "time zone",
        ),
        (
            json!({ "time_zone": "Asia/Shanghai", "weekly": { "mon": [{ "open": "18:00", "close": "09:00" }] } }),
            "before",
        ),
        (
            json!({ "time_zone": "Asia/Shanghai", "weekly": { "mon": [{ "open": "9am", "close": "17:00" }] } }),
            "HH:MM",
        ),
        (
            json!({ "time_zone": "UTC", "weekly": { "someday": [] } }),
            "someday",
        ),
        (
            json!({ "time_zone": "UTC", "closed_dates": ["31/12/2026"] }),
            "",
        ),
    ];
    for (hours, says) in cases {
        let (status, body) = patch_site(&app, &site_id, json!({ "business_hours": hours })).await;
        assert_eq!(status, 400, "{hours} → {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{hours}: {message}");
    }
    // Nothing was stored: the site is still always open.
    let key = site["widget_key"].as_str().unwrap();
    assert_eq!(config(&app, key).await["within_business_hours"], true);
    // A valid Shanghai schedule is stored as sent.
    let hours = json!({ "time_zone": "Asia/Shanghai",
        "weekly": { "mon": [{ "open": "09:00", "close": "12:00" }, { "open": "13:00", "close": "18:00" }] },
        "closed_dates": ["2027-02-06"] });
    let (status, body) = patch_site(&app, &site_id, json!({ "business_hours": hours })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["business_hours"]["weekly"]["mon"][1]["open"], "13:00");
    assert_eq!(body["business_hours"]["closed_dates"][0], "2027-02-06");
}

// ---------------------------------------------------------------------------------------
// CSAT
// ---------------------------------------------------------------------------------------

/// A visitor whose conversation Alice answered and resolved.
async fn resolved_conversation(
    app: &TestApp,
    key: &str,
    agent: &TestAgent,
    tag: &str,
) -> (WsClient, String) {
    let (mut v, _) = app.visitor(key).await;
    let m = send_and_ack(&mut v, &format!("{tag}-1"), "Help please").await;
    let conv = id(&m["conversation_id"]);
    let (status, _) = app
        .post(
            &format!("/api/conversations/{conv}/resolve"),
            &agent.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    v.recv_until_where("conversation.updated", |f| {
        f["conversation"]["status"] == "resolved"
    })
    .await;
    (v, conv)
}

#[actix_web::test]
async fn csat_one_rating_per_conversation_changeable_within_the_window_and_averaged() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let alice = app.online_agent("Alice", 5).await;

    let (mut v, conv) = resolved_conversation(&app, &key, &alice, "a").await;
    // Bad input: a clear error each, nothing stored.
    v.send_json(json!({ "type": "rating", "score": 0 })).await;
    assert_eq!(v.recv_until("error").await["code"], "bad_request");
    v.send_json(json!({ "type": "rating", "score": "five" }))
        .await;
    assert_eq!(v.recv_until("error").await["code"], "bad_request");
    v.send_json(json!({ "type": "rating", "score": 3, "comment": "x".repeat(2001) }))
        .await;
    assert_eq!(v.recv_until("error").await["code"], "too_large");
    assert_eq!(app.sql_i64("SELECT count(*) FROM csat_ratings").await, 0);

    v.send_json(json!({ "type": "rating", "score": 2, "comment": "  Slow answer  " }))
        .await;
    assert_eq!(v.recv_until("rating.ack").await["score"], 2);
    // Changed a minute later: still one rating, the new one.
    v.send_json(json!({ "type": "rating", "score": 4, "comment": "Actually it was fine" }))
        .await;
    assert_eq!(v.recv_until("rating.ack").await["score"], 4);
    let c = app.conversation(&alice.token, &conv).await;
    assert_eq!(c["rating"], 4);
    assert_eq!(c["rating_comment"], "Actually it was fine");
    let rows = app
        .sql_rows(&format!(
            "SELECT rating, comment FROM csat_ratings WHERE conversation_id = '{conv}'"
        ))
        .await;
    assert_eq!(
        rows,
        vec![json!({ "rating": 4, "comment": "Actually it was fine" })]
    );

    // A second conversation, rated 1 over long-polling (the same frame over HTTP).
    let (poller, conv2) = {
        let (status, welcome) = app
            .request(
                Method::POST,
                &format!("/api/visitor/session?site={key}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200);
        let token = welcome["token"].as_str().unwrap().to_string();
        let send = |frame: Value| {
            let app = &app;
            let key = key.clone();
            let token = token.clone();
            async move {
                let res = app
                    .http
                    .post(app.url(&format!("/api/visitor/send?site={key}&token={token}")))
                    .header("content-type", "text/plain")
                    .body(frame.to_string())
                    .send()
                    .await
                    .unwrap();
                res.json::<Value>().await.unwrap()
            }
        };
        let sent =
            send(json!({ "type": "message.send", "client_msg_id": "p-1", "body": "Hi" })).await;
        let conv2 = sent["frames"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["type"] == "message.ack")
            .map(|f| id(&f["message"]["conversation_id"]))
            .expect("ack");
        let (status, _) = app
            .post(
                &format!("/api/conversations/{conv2}/resolve"),
                &alice.token,
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        let rated = send(json!({ "type": "rating", "score": 1 })).await;
        assert_eq!(rated["frames"][0]["type"], "rating.ack", "{rated}");
        (token, conv2)
    };
    assert!(!poller.is_empty());

    let (status, csat) = app.get("/api/csat", &alice.token).await;
    assert_eq!(status, 200, "{csat}");
    assert_eq!(csat["responses"], 2);
    assert_eq!(csat["average"], 2.5);
    assert_eq!(csat["distribution"], json!([1, 0, 0, 1, 0]));
    let (_, stats) = app.get("/api/stats", &admin).await;
    assert_eq!(stats["average_rating"], 2.5);
    let (status, bad) = app.get("/api/csat?from=yesterday", &admin).await;
    assert_eq!(status, 400, "{bad}");

    // Long after resolution the rating can no longer be changed.
    app.sql_exec(&format!(
        "UPDATE conversations SET resolved_at = now() - interval '8 days' WHERE id = '{conv2}'"
    ))
    .await;
    app.sql_exec(&format!(
        "UPDATE conversations SET resolved_at = now() - interval '8 days' WHERE id = '{conv}'"
    ))
    .await;
    v.send_json(json!({ "type": "rating", "score": 5 })).await;
    let err = v.recv_until("error").await;
    assert_eq!(err["code"], "conflict");
    assert!(
        err["message"].as_str().unwrap().contains("too long ago"),
        "{err}"
    );
    assert_eq!(app.conversation(&admin, &conv).await["rating"], 4);
    let _ = conv2;
}

// ---------------------------------------------------------------------------------------
// Identity verification
// ---------------------------------------------------------------------------------------

fn identity_url(key: &str, token: Option<&str>, user: &str, hash: &str) -> String {
    let mut u = format!(
        "/ws/visitor?site={key}&user_id={}&user_hash={hash}",
        urlencode(user)
    );
    if let Some(t) = token {
        u.push_str(&format!("&token={t}"));
    }
    u
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn connect(app: &TestApp, path: &str) -> (WsClient, Value) {
    let mut ws = WsClient::connect(&app.ws_url(path), None)
        .await
        .expect("handshake");
    let welcome = ws.recv_json().await;
    assert_eq!(welcome["type"], "session.welcome", "{welcome}");
    ws.sync().await;
    (ws, welcome)
}

#[actix_web::test]
async fn a_verified_user_is_one_visitor_on_every_device_and_forged_identities_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let key = site["widget_key"].as_str().unwrap().to_string();
    let site_id = id(&site["id"]);
    assert_eq!(site["identity_verification"], false);

    // Without a secret: user_id is ignored, the old anonymous behaviour.
    let (_, w1) = connect(&app, &identity_url(&key, None, "cust-42", "00")).await;
    let (_, w2) = connect(&app, &identity_url(&key, None, "cust-42", "00")).await;
    assert_ne!(w1["visitor"]["id"], w2["visitor"]["id"]);
    assert_eq!(w1["visitor"]["user_id"], Value::Null);

    // Only admins set a secret; it is answered once, never again.
    let agent = app.create_agent("Bob", 5).await;
    let path = format!("/api/sites/{site_id}/identity_secret");
    let (status, _) = app.post(&path, &agent.token, json!({})).await;
    assert_eq!(status, 403);
    let (status, created) = app.post(&path, &admin, json!({})).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["identity_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    assert_eq!(created["site"]["identity_verification"], true);
    let (_, sites) = app.get("/api/sites", &admin).await;
    let listed = sites.to_string();
    assert!(!listed.contains(&secret), "the secret is listed: {listed}");
    assert_eq!(sites["items"][0]["identity_verification"], true);
    assert_eq!(
        sites["items"][0]["identity_secret_hint"],
        format!("…{}", &secret[secret.len() - 4..])
    );

    // Device A signs in as cust-42 and writes.
    let user = "cust-42@shop";
    let hash = user_hash(&secret, user);
    let (mut a, wa) = connect(&app, &identity_url(&key, None, user, &hash)).await;
    assert_eq!(wa["visitor"]["user_id"], user);
    let m = send_and_ack(&mut a, "a-1", "Where is my order?").await;
    let conv = id(&m["conversation_id"]);

    // Device B (another browser, no token) with the same identity: the same visitor, the
    // same conversation and its history.
    let (mut b, wb) = connect(&app, &identity_url(&key, None, user, &hash.to_uppercase())).await;
    assert_eq!(wb["visitor"]["id"], wa["visitor"]["id"]);
    assert_eq!(id(&wb["conversation"]["id"]), conv);
    assert_ne!(wb["token"], wa["token"], "each device has its own token");
    b.send_json(json!({ "type": "resume", "after_seq": 0 }))
        .await;
    let history = b.recv_until("message.history").await;
    assert_eq!(history["messages"][0]["body"], "Where is my order?");

    // A reply reaches both devices live; B writes and the agent sees one conversation.
    let alice = app.online_agent("Alice", 5).await;
    let (status, _) = app
        .reply(&alice.token, &conv, "r-1", "It ships today", false)
        .await;
    assert_eq!(status, 201);
    recv_message(&mut a, "It ships today").await;
    recv_message(&mut b, "It ships today").await;
    send_and_ack(&mut b, "b-1", "Thanks from my phone").await;
    let bodies: Vec<Value> = app
        .history(&admin, &conv)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!("Where is my order?"),
            json!("It ships today"),
            json!("Thanks from my phone")
        ]
    );
    // B's own token resumes it later, identity or not.
    let tb = wb["token"].as_str().unwrap();
    let (_, again) = app.visitor_again(&key, tb).await;
    assert_eq!(again["visitor"]["id"], wa["visitor"]["id"]);

    // Forged, missing and malformed hashes are refused with a clear error.
    for bad in [
        user_hash(&secret, "cust-43@shop"),
        user_hash("not the secret", user),
        String::new(),
        "zz".to_string(),
    ] {
        let refused = WsClient::connect(&app.ws_url(&identity_url(&key, None, user, &bad)), None)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, 401, "{bad}");
        assert_eq!(refused.body["error"]["code"], "unauthorized");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("identity verification failed"),
            "{}",
            refused.body
        );
    }
    let refused = WsClient::connect(
        &app.ws_url(&format!("/ws/visitor?site={key}&user_id=cust-42%40shop")),
        None,
    )
    .await
    .err()
    .expect("no hash");
    assert_eq!(refused.status, 401);
    // Over long-polling too (the widget reads this message).
    let (status, body) = app
        .request(
            Method::POST,
            &format!("/api/visitor/session?site={key}&user_id=x&user_hash=00"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("identity verification failed"));
    // Anonymous visitors still chat on a site with a secret.
    let (_, anon) = app.visitor(&key).await;
    assert_eq!(anon["visitor"]["user_id"], Value::Null);

    // An anonymous visitor who signs in keeps its conversation.
    let (mut guest, wg) = app.visitor(&key).await;
    let gm = send_and_ack(&mut guest, "g-1", "Before signing in").await;
    let guest_token = wg["token"].as_str().unwrap();
    let (_, signed) = connect(
        &app,
        &identity_url(
            &key,
            Some(guest_token),
            "cust-7",
            &user_hash(&secret, "cust-7"),
        ),
    )
    .await;
    assert_eq!(signed["visitor"]["id"], wg["visitor"]["id"]);
    assert_eq!(signed["visitor"]["user_id"], "cust-7");
    assert_eq!(signed["conversation"]["id"], gm["conversation_id"]);

    // Turned off: user_id is ignored again.
    let admin_path = format!("/api/sites/{site_id}/identity_secret");
    let (status, off) = app
        .request(Method::DELETE, &admin_path, Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["identity_verification"], false);
    let (_, w) = connect(&app, &identity_url(&key, None, user, "forged")).await;
    assert_ne!(w["visitor"]["id"], wa["visitor"]["id"]);
}

// ---------------------------------------------------------------------------------------
// Visitor attributes (kefu.setAttributes)
// ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn visitor_attributes_are_merged_and_shown_to_agents() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let admin = app.admin_token().await;
    let (mut v, welcome) = app.visitor(&key).await;
    let token = welcome["token"].as_str().unwrap().to_string();
    let m = send_and_ack(&mut v, "v-1", "Hello").await;
    let conv = id(&m["conversation_id"]);
    let path = format!("/api/visitor/attributes?site={key}&token={token}");

    let (status, body) = app
        .request(
            Method::PATCH,
            &path,
            None,
            Some(&json!({ "plan": "pro", "seats": 12 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributes"]["plan"], "pro");
    let (status, body) = app
        .request(
            Method::PATCH,
            &path,
            None,
            Some(&json!({ "plan": "enterprise" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let c = app.conversation(&admin, &conv).await;
    assert_eq!(c["visitor"]["attributes"]["plan"], "enterprise");
    assert_eq!(c["visitor"]["attributes"]["seats"], 12);

    // Bad input: clear errors.
    let (status, body) = app
        .request(
            Method::PATCH,
            &path,
            None,
            Some(&json!(["not", "an", "object"])),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app
        .request(
            Method::PATCH,
            &format!("/api/visitor/attributes?site={key}&token=nope"),
            None,
            Some(&json!({ "a": 1 })),
        )
        .await;
    assert_eq!(status, 401);
    let huge = json!({ "blob": "x".repeat(20_000) });
    let (status, _) = app.request(Method::PATCH, &path, None, Some(&huge)).await;
    assert_eq!(status, 413);

    // The browser's CORS preflight from the host page is answered.
    let res = app
        .http
        .request(Method::OPTIONS, app.url(&path))
        .header("Origin", "https://shop.example.com")
        .header("Access-Control-Request-Method", "PATCH")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("PATCH"));
}
