//! Auto-resolve: a conversation idle past its site's limit is resolved by the worker, with
//! a system message the visitor sees live; other sites keep the global setting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[actix_web::test]
async fn an_idle_conversation_is_resolved_with_a_system_message_seen_live() {
    let app = TestApp::spawn_with(|s| {
        s.worker_poll_ms = 100;
        s.auto_resolve_secs = 0; // off globally
        s.auto_resolve_message = "Closed for inactivity — write again any time.".into();
    })
    .await;
    let admin = app.admin_token().await;
    let quick = app.create_site_with(json!({ "name": "Quick" })).await;
    let slow = app.create_site_with(json!({ "name": "Slow" })).await;
    let quick_id = id(&quick["id"]);
    let path = format!("/api/sites/{quick_id}/auto-resolve");
    let (s, policy) = app.get(&path, &admin).await;
    assert_eq!(s, 200);
    assert_eq!(policy, json!({ "idle_secs": 0, "source": "global" }));
    let (s, policy) = app.put(&path, &admin, json!({ "idle_secs": 2 })).await;
    assert_eq!(s, 200, "{policy}");
    assert_eq!(policy, json!({ "idle_secs": 2, "source": "site" }));
    for bad in [
        json!({ "idle_secs": -1 }),
        json!({ "idle_secs": "soon" }),
        json!({ "idle": 5 }),
    ] {
        let (s, _) = app.put(&path, &admin, bad).await;
        assert_eq!(s, 400);
    }
    let bob = app.create_agent("Bob", 5).await;
    assert_eq!(app.get(&path, &bob.token).await.0, 403);

    let (mut visitor, _) = app.visitor(&id(&quick["widget_key"])).await;
    let first = send_and_ack(&mut visitor, "v-1", "Hello?").await;
    let conv = id(&first["conversation_id"]);
    let (mut other, _) = app.visitor(&id(&slow["widget_key"])).await;
    let other_first = send_and_ack(&mut other, "o-1", "Hi").await;
    let other_conv = id(&other_first["conversation_id"]);

    // Live, on the visitor's socket: the system message and the resolved conversation.
    let system = visitor
        .recv_until_where("message.created", |v| {
            v["message"]["sender_type"] == "system"
        })
        .await;
    assert_eq!(
        system["message"]["body"],
        "Closed for inactivity — write again any time."
    );
    assert_eq!(system["message"]["seq"], 2, "numbered like any message");
    let updated = visitor
        .seen_or_recv("conversation.updated", |v| {
            v["conversation"]["status"] == "resolved"
        })
        .await;
    assert_eq!(updated["conversation"]["id"], conv.as_str());
    let c = app.conversation(&admin, &conv).await;
    assert_eq!(c["status"], "resolved");
    let history = app.history(&admin, &conv).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["sender_type"], "system");

    // Resolved once: one conversation.resolved event, written with the change.
    let n = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM events WHERE kind = 'conversation.resolved' \
             AND conversation_id = '{conv}'"
        ))
        .await;
    assert_eq!(n, 1);

    // The other site follows the global setting (off): still waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = app.conversation(&admin, &other_conv).await;
    assert_eq!(c["status"], "pending");

    // Writing again reopens it, and it is resolved again only after another idle spell.
    send_and_ack(&mut visitor, "v-2", "Back again").await;
    let c = app.conversation(&admin, &conv).await;
    assert_eq!(c["status"], "pending");
    let again = visitor
        .recv_until_where("message.created", |v| {
            v["message"]["sender_type"] == "system"
        })
        .await;
    assert_eq!(again["message"]["seq"], 4);
}
