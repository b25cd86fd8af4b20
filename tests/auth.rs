//! Agent authentication: login failures, per-email throttling, idle expiry, logout and
//! disabling (revocation, including open WebSockets), and admin-only routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[actix_web::test]
async fn wrong_passwords_are_401_then_throttled_per_email_with_other_accounts_unaffected() {
    let app = TestApp::spawn_with(|s| s.login_max_failures = 3).await;
    let alice = app.create_agent("Alice", 5).await;

    // Wrong password and unknown account look the same.
    let (status, wrong) = app.login_raw(&alice.email, "not-the-password").await;
    assert_eq!(status, 401, "{wrong}");
    assert_eq!(wrong["error"]["code"], "unauthorized");
    let (status, unknown) = app.login_raw("nobody@kefu.test", "whatever-1").await;
    assert_eq!(status, 401);
    assert_eq!(unknown["error"]["message"], wrong["error"]["message"]);
    let (status, e) = app
        .request(Method::POST, "/api/auth/login", None, Some(&json!({})))
        .await;
    assert_eq!(status, 400, "{e}");

    // Two more failures: the account is throttled, even with the right password, and
    // whatever the case of the email.
    for _ in 0..2 {
        let (status, _) = app.login_raw(&alice.email, "still-wrong-1").await;
        assert_eq!(status, 401);
    }
    let (status, throttled) = app.login_raw(&alice.email, AGENT_PASSWORD).await;
    assert_eq!(status, 429, "{throttled}");
    assert_eq!(throttled["error"]["code"], "rate_limited");
    let (status, _) = app
        .login_raw(&alice.email.to_uppercase(), AGENT_PASSWORD)
        .await;
    assert_eq!(status, 429);

    // Other accounts are unaffected.
    let bob = app.create_agent("Bob", 5).await;
    let (status, _) = app.login_raw(&bob.email, AGENT_PASSWORD).await;
    assert_eq!(status, 200);
    let (status, _) = app.login_raw(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, 200);
    // Alice's existing session still works: throttling is about new logins.
    let (status, me) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, 200, "{me}");

    // Once the failures are older than the window, Alice may log in again.
    app.sql_exec("UPDATE login_failures SET failed_at = now() - interval '16 minutes'")
        .await;
    let (status, ok) = app.login_raw(&alice.email, AGENT_PASSWORD).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["agent"]["email"], alice.email.as_str());
    assert!(ok["token"].as_str().unwrap().len() >= 32);
}

#[actix_web::test]
async fn a_token_unused_for_12_hours_is_expired() {
    let app = TestApp::spawn().await;
    let alice = app.create_agent("Alice", 5).await;
    // A second token of Alice's, last used 11 h ago, still works.
    let recent = app.login(&alice.email, AGENT_PASSWORD).await;

    // Backdated before either token was ever presented (nothing is cached yet).
    app.sql_exec(&format!(
        "UPDATE agent_sessions SET last_used_at = now() - interval '13 hours' \
         WHERE token_hash = sha256('{}'::bytea)",
        alice.token
    ))
    .await;
    app.sql_exec(&format!(
        "UPDATE agent_sessions SET last_used_at = now() - interval '11 hours' \
         WHERE token_hash = sha256('{}'::bytea)",
        recent
    ))
    .await;

    let (status, e) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, 401, "{e}");
    assert_eq!(e["error"]["code"], "unauthorized");
    let refused = WsClient::connect(
        &app.ws_url(&format!("/ws/agent?token={}", alice.token)),
        None,
    )
    .await
    .err()
    .expect("an expired token opens no agent socket");
    assert_eq!(refused.status, 401);

    let (status, me) = app.get("/api/me", &recent).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], alice.id.as_str());
    // Using it renews it.
    let fresh = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM agent_sessions WHERE token_hash = sha256('{recent}'::bytea) \
             AND last_used_at > now() - interval '1 minute'"
        ))
        .await;
    assert_eq!(fresh, 1);
}

#[actix_web::test]
async fn logout_revokes_the_token_at_once_and_closes_its_websocket() {
    let app = TestApp::spawn().await;
    let alice = app.create_agent("Alice", 5).await;
    let other = app.login(&alice.email, AGENT_PASSWORD).await;

    // The token is known to the node (cached) before logout.
    let (status, _) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, 200);
    let mut ws = app.agent_ws(&alice.token).await;
    let mut other_ws = app.agent_ws(&other).await;

    let (status, _) = app
        .request(Method::POST, "/api/auth/logout", Some(&alice.token), None)
        .await;
    assert_eq!(status, 204);
    let (status, e) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, 401, "revoked immediately, not at cache expiry: {e}");
    let (status, _) = app.get("/api/conversations", &alice.token).await;
    assert_eq!(status, 401);
    assert_eq!(ws.expect_close(WAIT).await, Some(1008));
    let refused = WsClient::connect(
        &app.ws_url(&format!("/ws/agent?token={}", alice.token)),
        None,
    )
    .await
    .err()
    .expect("a revoked token opens no agent socket");
    assert_eq!(refused.status, 401);

    // Only that token ended: Alice's other session carries on.
    let (status, _) = app.get("/api/me", &other).await;
    assert_eq!(status, 200);
    assert!(other_ws.is_open().await);
}

#[actix_web::test]
async fn disabling_an_agent_ends_its_sessions_and_logins() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let alice = app.create_agent("Alice", 5).await;
    let mut ws = app.agent_ws(&alice.token).await;

    let (status, a) = app
        .request(
            Method::PATCH,
            &format!("/api/agents/{}", alice.id),
            Some(&admin),
            Some(&json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["disabled"], true);
    assert_eq!(ws.expect_close(WAIT).await, Some(1008));
    let (status, _) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, 401);
    let (status, _) = app.login_raw(&alice.email, AGENT_PASSWORD).await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn team_and_site_management_is_for_admins_only() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let alice = app.create_agent("Alice", 5).await;
    let key = app.create_site().await;
    let (_, sites) = app.get("/api/sites", &admin).await;
    let site_id = id(&sites["items"][0]["id"]);
    assert_eq!(sites["items"][0]["widget_key"], key.as_str());
    assert_eq!(sites["next_cursor"], Value::Null);

    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/agents".into(), None),
        (
            Method::POST,
            "/api/agents".into(),
            Some(
                json!({ "email": "eve@kefu.test", "name": "Eve", "password": "password-123", "role": "admin" }),
            ),
        ),
        (
            Method::PATCH,
            format!("/api/agents/{}", alice.id),
            Some(json!({ "role": "admin" })),
        ),
        (Method::GET, "/api/sites".into(), None),
        (
            Method::POST,
            "/api/sites".into(),
            Some(json!({ "name": "Mine" })),
        ),
        (
            Method::PATCH,
            format!("/api/sites/{site_id}"),
            Some(json!({ "greeting": "pwned" })),
        ),
    ];
    for (method, path, body) in &forbidden {
        let (status, e) = app
            .request(method.clone(), path, Some(&alice.token), body.as_ref())
            .await;
        assert_eq!(status, 403, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "forbidden");
    }
    // Nothing changed.
    let (_, me) = app.get("/api/me", &alice.token).await;
    assert_eq!(me["role"], "agent");
    let (_, agents) = app.get("/api/agents", &admin).await;
    let emails: Vec<&str> = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert!(!emails.contains(&"eve@kefu.test"));
    let (status, cfg) = app
        .request(Method::GET, &format!("/api/config?site={key}"), None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(cfg["greeting"], "Hi! How can we help?");

    // Agents do their own work; everybody needs a valid token.
    let (status, _) = app.get("/api/conversations", &alice.token).await;
    assert_eq!(status, 200);
    for (path, token) in [
        ("/api/me", None),
        ("/api/conversations", None),
        ("/api/agents", Some("not-a-token")),
        ("/api/stats", Some("")),
    ] {
        let (status, e) = app.request(Method::GET, path, token, None).await;
        assert_eq!(status, 401, "{path}: {e}");
        assert_eq!(e["error"]["code"], "unauthorized");
    }
    let res = app
        .http
        .get(app.url("/api/me"))
        .header("Authorization", format!("Basic {}", alice.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let refused = WsClient::connect(&app.ws_url("/ws/agent"), None)
        .await
        .err()
        .expect("no token, no agent socket");
    assert_eq!(refused.status, 401);

    // Admins can promote; the new admin can then manage the team.
    let (status, a) = app
        .request(
            Method::PATCH,
            &format!("/api/agents/{}", alice.id),
            Some(&admin),
            Some(&json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["role"], "admin");
    let (status, _) = app.get("/api/agents", &alice.token).await;
    assert_eq!(
        status, 200,
        "a promotion applies to the agent's current token"
    );
}
