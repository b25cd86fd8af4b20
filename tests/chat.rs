//! Chatting end to end: visitor and agent round trips over both WebSockets and the HTTP
//! reply route, idempotent resends, resume after a disconnect, gap-free `seq` under
//! concurrent senders, private notes, and the smaller visitor frames (profile, rating,
//! ping, typing, read).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

#[actix_web::test]
async fn visitor_and_agent_chat_over_both_websockets_and_the_http_reply_route() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let mut console = app.agent_ws(&alice.token).await;

    let (mut visitor, welcome) = app.visitor(&key).await;
    assert!(welcome["token"].as_str().expect("token").len() >= 32);
    assert_eq!(welcome["conversation"], Value::Null);
    assert_eq!(welcome["agents_online"], true);
    assert_eq!(welcome["greeting"], "Hi! How can we help?");
    let visitor_id = id(&welcome["visitor"]["id"]);

    // Visitor → agent: the ack carries the committed message.
    let first = send_and_ack(&mut visitor, "v-1", "  Hello, is anyone there?  ").await;
    assert_eq!(first["seq"], 1);
    assert_eq!(first["sender_type"], "visitor");
    assert_eq!(first["sender_id"], visitor_id.as_str());
    assert_eq!(first["body"], "Hello, is anyone there?", "body is trimmed");
    assert_eq!(first["private"], false);
    assert_eq!(first["client_msg_id"], "v-1");
    let conv = id(&first["conversation_id"]);

    let created = console.recv_until("conversation.created").await;
    assert_eq!(created["conversation_id"], conv.as_str());
    assert_eq!(created["conversation"]["visitor_id"], visitor_id.as_str());
    let live = console
        .recv_until_where("message.created", |v| v["message"]["id"] == first["id"])
        .await;
    assert_eq!(live["conversation_id"], conv.as_str());
    assert_eq!(
        live["message"], first,
        "agents get the committed message as acked"
    );

    // The only available agent gets the conversation; agent and visitor both hear of it
    // (the assignment may be announced before or after the message).
    let assigned = console
        .seen_or_recv("conversation.updated", |v| {
            v["conversation"]["status"] == "open"
        })
        .await;
    assert_eq!(
        assigned["conversation"]["assignee"]["id"],
        alice.id.as_str()
    );
    assert_eq!(assigned["conversation"]["assignee"]["name"], "Alice");
    // (The visitor may learn it with its first ack, before this frame is read.)
    let seen = visitor
        .seen_or_recv("conversation.updated", |v| {
            v["conversation"]["status"] == "open"
        })
        .await;
    assert_eq!(seen["conversation"]["assignee"]["id"], alice.id.as_str());

    // Agent → visitor over the agent WebSocket.
    let reply = agent_send_and_ack(&mut console, &conv, "a-1", "Hi, Alice here.", false).await;
    assert_eq!(reply["seq"], 2);
    assert_eq!(reply["sender_type"], "agent");
    assert_eq!(reply["sender_id"], alice.id.as_str());
    let got = recv_message(&mut visitor, "Hi, Alice here.").await;
    assert_eq!(got, reply);

    // Agent → visitor over HTTP: 201 with the message; the console sees it live as well.
    let (status, http_reply) = app
        .reply(&alice.token, &conv, "a-2", "How can I help?", false)
        .await;
    assert_eq!(status, 201, "{http_reply}");
    assert_eq!(http_reply["seq"], 3);
    assert_eq!(
        recv_message(&mut visitor, "How can I help?").await,
        http_reply
    );
    assert_eq!(
        recv_message(&mut console, "How can I help?").await,
        http_reply
    );

    // And back.
    let again = send_and_ack(&mut visitor, "v-2", "My order is late.").await;
    assert_eq!(again["seq"], 4);
    assert_eq!(recv_message(&mut console, "My order is late.").await, again);

    // The sender never gets its own message twice (ack only).
    visitor
        .expect_none(
            QUIET,
            |v| v["type"] == "message.created" && v["message"]["sender_type"] == "visitor",
            "echo of the visitor's own message",
        )
        .await;

    let history = app.history(&alice.token, &conv).await;
    let bodies: Vec<&str> = history
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "Hello, is anyone there?",
            "Hi, Alice here.",
            "How can I help?",
            "My order is late."
        ]
    );
    let c = app.conversation(&alice.token, &conv).await;
    assert_eq!(c["last_seq"], 4);
    assert!(!c["first_response_at"].is_null(), "first response recorded");
    assert_eq!(c["visitor"]["id"], visitor_id.as_str());
}

#[actix_web::test]
async fn a_resend_with_the_same_client_msg_id_returns_the_original_and_stores_one_row() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let mut console = app.agent_ws(&alice.token).await;
    let (mut visitor, _) = app.visitor(&key).await;

    let original = send_and_ack(&mut visitor, "dup-1", "Where is my parcel?").await;
    let conv = id(&original["conversation_id"]);
    recv_message(&mut console, "Where is my parcel?").await;

    // The widget resends after a flaky network: same id, even with another body.
    let resent = send_and_ack(&mut visitor, "dup-1", "Where is my parcel?").await;
    assert_eq!(
        resent, original,
        "a resend answers with the original message"
    );
    let resent = send_and_ack(&mut visitor, "dup-1", "edited text").await;
    assert_eq!(resent, original);
    // Agents are not told twice.
    console
        .expect_none(
            QUIET,
            |v| v["type"] == "message.created" && v["message"]["client_msg_id"] == "dup-1",
            "a second message.created for a resend",
        )
        .await;

    // HTTP: 201 the first time, 200 with the original afterwards.
    let (status, first) = app
        .reply(&alice.token, &conv, "http-1", "On its way.", false)
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = app
        .reply(&alice.token, &conv, "http-1", "On its way.", false)
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second, first);

    // The same client_msg_id from another sender is another message.
    let (status, other) = app
        .reply(&alice.token, &conv, "dup-1", "Agent reusing the id", false)
        .await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(other["seq"], 3);

    let history = app.history(&alice.token, &conv).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let rows = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM messages WHERE conversation_id = '{conv}' \
             AND client_msg_id = 'dup-1' AND sender_type = 'visitor'"
        ))
        .await;
    assert_eq!(rows, 1);
    assert_eq!(
        app.sql_i64(&format!(
            "SELECT count(*) AS n FROM messages WHERE conversation_id = '{conv}'"
        ))
        .await,
        3
    );
}

#[actix_web::test]
async fn resume_after_a_disconnect_returns_exactly_the_missed_messages_once() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;

    let (mut visitor, welcome) = app.visitor(&key).await;
    let token = id(&welcome["token"]);
    let visitor_id = id(&welcome["visitor"]["id"]);
    let first = send_and_ack(&mut visitor, "v-1", "Hello").await;
    let conv = id(&first["conversation_id"]);
    let (status, r1) = app.reply(&alice.token, &conv, "a-1", "Hi!", false).await;
    assert_eq!(status, 201);
    let seen = recv_message(&mut visitor, "Hi!").await;
    let last_seen = seen["seq"].as_i64().unwrap();
    assert_eq!(last_seen, r1["seq"].as_i64().unwrap());

    // The tab goes away; the agent keeps writing.
    visitor.stream.close(None).await.expect("close");
    drop(visitor);
    for (i, body) in [
        "Are you still there?",
        "I checked your order.",
        "It ships today.",
    ]
    .iter()
    .enumerate()
    {
        let (status, m) = app
            .reply(&alice.token, &conv, &format!("a-{}", i + 2), body, false)
            .await;
        assert_eq!(status, 201, "{m}");
    }

    // Reconnect with the stored token: same visitor, same conversation.
    let (mut visitor, welcome) = app.visitor_again(&key, &token).await;
    assert_eq!(welcome["token"], token.as_str());
    assert_eq!(welcome["visitor"]["id"], visitor_id.as_str());
    assert_eq!(welcome["conversation"]["id"], conv.as_str());
    assert_eq!(welcome["conversation"]["last_seq"], 5);

    visitor
        .send_json(json!({ "type": "resume", "after_seq": last_seen }))
        .await;
    let history = visitor.recv_until("message.history").await;
    assert_eq!(history["conversation_id"], conv.as_str());
    assert_eq!(history["more"], false);
    let missed: Vec<(i64, &str)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_i64().unwrap(), m["body"].as_str().unwrap()))
        .collect();
    assert_eq!(
        missed,
        [
            (3, "Are you still there?"),
            (4, "I checked your order."),
            (5, "It ships today.")
        ]
    );
    // Once: they do not arrive live as well.
    visitor
        .expect_no_frame_of_type("message.created", QUIET)
        .await;

    // Caught up: nothing more; new messages arrive live again.
    visitor
        .send_json(json!({ "type": "resume", "after_seq": 5 }))
        .await;
    let empty = visitor.recv_until("message.history").await;
    assert_eq!(empty["messages"], json!([]));
    let (status, _) = app
        .reply(&alice.token, &conv, "a-9", "Anything else?", false)
        .await;
    assert_eq!(status, 201);
    assert_eq!(recv_message(&mut visitor, "Anything else?").await["seq"], 6);
    // The visitor can write on the resumed conversation.
    let m = send_and_ack(&mut visitor, "v-2", "No, thanks!").await;
    assert_eq!(m["conversation_id"], conv.as_str());
    assert_eq!(m["seq"], 7);
}

#[actix_web::test]
async fn resume_pages_long_histories_200_at_a_time() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-1", "Hello").await;
    let conv = id(&first["conversation_id"]);
    // 250 more agent messages, written directly (the fast way to a long history).
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, private, body) \
         SELECT gen_random_uuid(), '{conv}', s, 'agent', false, 'm' || s \
         FROM generate_series(2, 251) s"
    ))
    .await;
    app.sql_exec(&format!(
        "UPDATE conversations SET last_seq = 251 WHERE id = '{conv}'"
    ))
    .await;

    visitor
        .send_json(json!({ "type": "resume", "after_seq": 0 }))
        .await;
    let page = visitor.recv_until("message.history").await;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 200);
    assert_eq!(page["more"], true);
    assert_eq!(msgs[0]["seq"], 1);
    assert_eq!(msgs[199]["seq"], 200);
    visitor
        .send_json(json!({ "type": "resume", "after_seq": 200 }))
        .await;
    let page = visitor.recv_until("message.history").await;
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (201..=251).collect::<Vec<_>>());
    assert_eq!(page["more"], false);
}

#[actix_web::test]
async fn fifty_concurrent_senders_get_gap_free_unique_seqs() {
    let app = TestApp::spawn_with(|s| {
        s.visitor_burst = 100.0;
        s.db_pool_size = 16;
    })
    .await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let bob = app.online_agent("Bob", 5).await;
    let admin = app.admin_token().await;
    let mut watcher = app.agent_ws(&admin).await;
    let mut console = app.agent_ws(&bob.token).await;

    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-0", "start").await;
    let conv = id(&first["conversation_id"]);

    // 50 HTTP posts from two agents, 20 visitor frames and 10 agent WebSocket frames, all at
    // once.
    const HTTP: usize = 50;
    const VISITOR: usize = 20;
    const AGENT_WS: usize = 10;
    for i in 0..VISITOR {
        visitor
            .send_json(json!({ "type": "message.send", "client_msg_id": format!("v-{}", i + 1), "body": format!("visitor {i}") }))
            .await;
    }
    for i in 0..AGENT_WS {
        console
            .send_json(json!({
                "type": "message.send", "conversation_id": conv,
                "client_msg_id": format!("ws-{i}"), "body": format!("agent ws {i}"),
            }))
            .await;
    }
    let posts = (0..HTTP).map(|i| {
        let token = if i % 2 == 0 { &alice.token } else { &bob.token };
        let app = &app;
        let conv = &conv;
        async move {
            app.reply(
                token,
                conv,
                &format!("http-{i}"),
                &format!("http {i}"),
                false,
            )
            .await
        }
    });
    let results = futures_util::future::join_all(posts).await;
    for (status, body) in &results {
        assert_eq!(*status, 201, "{body}");
    }

    let total = 1 + HTTP + VISITOR + AGENT_WS;
    // Every sender got its ack.
    let mut visitor_seen = BTreeSet::new();
    visitor_seen.insert(1);
    let mut acks = 0;
    while acks < VISITOR || visitor_seen.len() < total {
        let f = visitor.recv_json().await;
        match f["type"].as_str().unwrap() {
            "message.ack" => {
                acks += 1;
                assert!(visitor_seen.insert(f["message"]["seq"].as_i64().unwrap()));
            }
            "message.created" => {
                assert!(
                    visitor_seen.insert(f["message"]["seq"].as_i64().unwrap()),
                    "a message reached the visitor twice: {f}"
                );
            }
            _ => {}
        }
    }
    let mut console_acks = 0;
    while console_acks < AGENT_WS {
        let f = console.recv_until("message.ack").await;
        assert!(f["message"]["seq"].as_i64().unwrap() >= 1);
        console_acks += 1;
    }
    // A third agent saw every message live, in seq order.
    let mut live = Vec::new();
    while live.len() < total {
        let f = watcher.recv_until("message.created").await;
        live.push(f["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(live, (1..=total as i64).collect::<Vec<_>>());

    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(
        visitor_seen.into_iter().collect::<Vec<_>>(),
        expected,
        "the visitor saw every seq once"
    );
    let history = app.history(&alice.token, &conv).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, expected, "history is 1..N without gap or duplicate");
    let ids: BTreeSet<&str> = history.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), total);
    let stored = app
        .sql_rows(&format!(
            "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi, \
             (SELECT last_seq FROM conversations WHERE id = '{conv}') AS last \
             FROM messages WHERE conversation_id = '{conv}'"
        ))
        .await;
    assert_eq!(
        stored[0],
        json!({ "n": total, "d": total, "lo": 1, "hi": total, "last": total })
    );
}

#[actix_web::test]
async fn private_notes_reach_agents_but_never_the_visitor() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let bob = app.online_agent("Bob", 5).await;
    let mut alice_ws = app.agent_ws(&alice.token).await;
    let mut bob_ws = app.agent_ws(&bob.token).await;

    let (mut visitor, welcome) = app.visitor(&key).await;
    let token = id(&welcome["token"]);
    let first = send_and_ack(&mut visitor, "v-1", "My card was charged twice").await;
    let conv = id(&first["conversation_id"]);

    // A note over HTTP and one over the agent WebSocket, then a public reply.
    let (status, note1) = app
        .reply(
            &alice.token,
            &conv,
            "n-1",
            "NOTE: refund in billing tool",
            true,
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(note1["private"], true);
    let note2 = agent_send_and_ack(&mut alice_ws, &conv, "n-2", "NOTE: ask Bob", true).await;
    assert_eq!(note2["private"], true);
    let (status, public) = app
        .reply(&alice.token, &conv, "a-1", "We are refunding you.", false)
        .await;
    assert_eq!(status, 201);

    // Live: the visitor's next message is the public reply; it never saw the notes.
    let next = visitor.recv_until("message.created").await;
    assert_eq!(next["message"], public);
    assert_eq!(next["message"]["seq"], 4, "notes take seq numbers: a gap");
    visitor
        .expect_none(
            QUIET,
            |v| v.to_string().contains("NOTE:"),
            "a private note on the visitor socket",
        )
        .await;

    // Agents see them live (another agent, too) and in history.
    let live = recv_message(&mut bob_ws, "NOTE: refund in billing tool").await;
    assert_eq!(live["private"], true);
    let live = recv_message(&mut bob_ws, "NOTE: ask Bob").await;
    assert_eq!(live["private"], true);
    let own = alice_ws
        .seen_or_recv("message.created", |v| {
            v["message"]["body"] == "NOTE: refund in billing tool"
        })
        .await;
    assert_eq!(own["message"]["private"], true, "the author's console too");
    let history = app.history(&bob.token, &conv).await;
    let private: Vec<bool> = history
        .iter()
        .map(|m| m["private"].as_bool().unwrap())
        .collect();
    assert_eq!(private, [false, true, true, false]);

    // Resume: not on the open socket, not after a reconnect.
    visitor
        .send_json(json!({ "type": "resume", "after_seq": 0 }))
        .await;
    let h = visitor.recv_until("message.history").await;
    let seqs: Vec<i64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 4]);
    assert!(!h.to_string().contains("NOTE:"));
    drop(visitor);
    let (mut visitor, welcome) = app.visitor_again(&key, &token).await;
    assert!(!welcome.to_string().contains("NOTE:"));
    visitor
        .send_json(json!({ "type": "resume", "after_seq": 1 }))
        .await;
    let h = visitor.recv_until("message.history").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    assert!(!h.to_string().contains("NOTE:"));
    // A note written while the visitor is connected after a reconnect: still hidden.
    let (status, _) = app
        .reply(&bob.token, &conv, "n-3", "NOTE: done", true)
        .await;
    assert_eq!(status, 201);
    let (status, _) = app.reply(&bob.token, &conv, "a-2", "Done!", false).await;
    assert_eq!(status, 201);
    assert_eq!(recv_message(&mut visitor, "Done!").await["seq"], 6);
    visitor
        .expect_none(QUIET, |v| v.to_string().contains("NOTE:"), "a private note")
        .await;
}

#[actix_web::test]
async fn visitor_profile_rating_ping_typing_and_read_receipts() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let mut console = app.agent_ws(&alice.token).await;
    let (mut visitor, welcome) = app.visitor(&key).await;
    let visitor_id = id(&welcome["visitor"]["id"]);

    // ping → pong
    visitor.send_json(json!({ "type": "ping" })).await;
    assert_eq!(visitor.recv_json().await["type"], "pong");

    // Rating before there is any conversation: conflict.
    visitor
        .send_json(json!({ "type": "rating", "score": 5 }))
        .await;
    let e = visitor.recv_until("error").await;
    assert_eq!(e["code"], "conflict", "{e}");

    // profile.update → visitor.updated, stored.
    visitor
        .send_json(json!({ "type": "profile.update", "name": " Mei ", "email": "mei@example.com" }))
        .await;
    let upd = visitor.recv_until("visitor.updated").await;
    assert_eq!(upd["visitor"]["id"], visitor_id.as_str());
    assert_eq!(upd["visitor"]["name"], "Mei");
    assert_eq!(upd["visitor"]["email"], "mei@example.com");
    visitor
        .send_json(json!({ "type": "profile.update", "email": "not-an-email" }))
        .await;
    assert_eq!(visitor.recv_until("error").await["code"], "bad_request");

    let first = send_and_ack(&mut visitor, "v-1", "Hi").await;
    let conv = id(&first["conversation_id"]);
    let c = app.conversation(&alice.token, &conv).await;
    assert_eq!(c["visitor"]["name"], "Mei");
    assert_eq!(c["visitor"]["email"], "mei@example.com");

    // Typing and read, visitor → agent; a burst of keystrokes is relayed once.
    for _ in 0..5 {
        visitor
            .send_json(json!({ "type": "typing", "on": true }))
            .await;
    }
    let t = console.recv_until("typing").await;
    assert_eq!(t["conversation_id"], conv.as_str());
    assert_eq!(t["on"], true);
    assert_eq!(t["sender_type"], "visitor");
    console.expect_no_frame_of_type("typing", QUIET).await;
    visitor
        .send_json(json!({ "type": "typing", "on": false }))
        .await;
    assert_eq!(console.recv_until("typing").await["on"], false);
    visitor
        .send_json(json!({ "type": "read", "up_to_seq": 1 }))
        .await;
    let r = console.recv_until("message.read").await;
    assert_eq!(r["conversation_id"], conv.as_str());
    assert_eq!(r["up_to_seq"], 1);
    assert_eq!(r["sender_type"], "visitor");

    // Agent → visitor over the agent WebSocket.
    console
        .send_json(json!({ "type": "typing", "on": true, "conversation_id": conv }))
        .await;
    let t = visitor.recv_until("typing").await;
    assert_eq!(t["on"], true);
    assert_eq!(t["sender_type"], "agent");
    console
        .send_json(json!({ "type": "read", "up_to_seq": 1, "conversation_id": conv }))
        .await;
    let r = visitor.recv_until("message.read").await;
    assert_eq!(r["up_to_seq"], 1);
    assert_eq!(r["sender_type"], "agent");

    // … and over the HTTP routes.
    let (status, _) = app
        .post(
            &format!("/api/conversations/{conv}/typing"),
            &alice.token,
            json!({ "on": false }),
        )
        .await;
    assert_eq!(status, 204);
    let t = visitor.recv_until("typing").await;
    assert_eq!(t["on"], false);
    assert_eq!(t["sender_type"], "agent");
    let (status, _) = app
        .post(
            &format!("/api/conversations/{conv}/read"),
            &alice.token,
            json!({ "up_to_seq": 1 }),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(visitor.recv_until("message.read").await["up_to_seq"], 1);
    // The visitor's own typing is never echoed back to it.
    visitor
        .expect_none(
            QUIET,
            |v| v["type"] == "typing" && v["sender_type"] == "visitor",
            "own typing",
        )
        .await;

    // Rating an open conversation: conflict; after resolve: rating.ack, stored.
    visitor
        .send_json(json!({ "type": "rating", "score": 4 }))
        .await;
    assert_eq!(visitor.recv_until("error").await["code"], "conflict");
    let (status, resolved) = app
        .post(
            &format!("/api/conversations/{conv}/resolve"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    let upd = visitor
        .recv_until_where("conversation.updated", |v| {
            v["conversation"]["status"] == "resolved"
        })
        .await;
    assert_eq!(upd["conversation_id"], conv.as_str());
    visitor
        .send_json(json!({ "type": "rating", "score": 9 }))
        .await;
    assert_eq!(visitor.recv_until("error").await["code"], "bad_request");
    visitor
        .send_json(json!({ "type": "rating", "score": 5, "comment": "Quick and kind" }))
        .await;
    let ack = visitor.recv_until("rating.ack").await;
    assert_eq!(ack["score"], 5);
    assert_eq!(ack["conversation_id"], conv.as_str());
    let c = app.conversation(&alice.token, &conv).await;
    assert_eq!(c["rating"], 5);
    assert_eq!(c["rating_comment"], "Quick and kind");

    // A visitor message on a resolved conversation reopens it.
    send_and_ack(&mut visitor, "v-2", "One more thing").await;
    let upd = console
        .recv_until_where("conversation.updated", |v| {
            v["conversation"]["status"] == "open"
        })
        .await;
    assert_eq!(upd["conversation_id"], conv.as_str());
}

#[actix_web::test]
async fn two_tabs_of_one_visitor_share_the_conversation_live() {
    let app = TestApp::spawn().await;
    let key = app.create_site().await;
    let alice = app.online_agent("Alice", 5).await;
    let (mut tab1, welcome) = app.visitor(&key).await;
    let token = id(&welcome["token"]);
    let first = send_and_ack(&mut tab1, "t1-1", "from the first tab").await;
    let conv = id(&first["conversation_id"]);
    let (mut tab2, welcome2) = app.visitor_again(&key, &token).await;
    assert_eq!(welcome2["conversation"]["id"], conv.as_str());

    // What one tab sends, the other shows; agent replies reach both.
    let m = send_and_ack(&mut tab2, "t2-1", "from the second tab").await;
    assert_eq!(recv_message(&mut tab1, "from the second tab").await, m);
    let (status, reply) = app
        .reply(&alice.token, &conv, "a-1", "Hello both", false)
        .await;
    assert_eq!(status, 201);
    assert_eq!(recv_message(&mut tab1, "Hello both").await, reply);
    assert_eq!(recv_message(&mut tab2, "Hello both").await, reply);
    // The sending tab gets its ack, not a copy.
    tab2.expect_none(
        QUIET,
        |v| v["type"] == "message.created" && v["message"]["id"] == m["id"],
        "an echo to the sending tab",
    )
    .await;
}
