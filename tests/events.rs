//! The durable event stream: events written in the change's own transaction, read gap-free
//! in id order through `GET /api/events` (with long poll), consumer cursors, retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::{json, Value};

/// Every event after `after` readable now (follows `next_after` until a page is empty).
async fn drain(app: &TestApp, token: &str, mut after: i64) -> (Vec<Value>, i64) {
    let mut all = Vec::new();
    loop {
        let (status, page) = app
            .get(&format!("/api/events?after={after}&limit=1000"), token)
            .await;
        assert_eq!(status, 200, "read events: {page}");
        let events = page["events"].as_array().expect("events").clone();
        let next = page["next_after"].as_i64().expect("next_after");
        if events.is_empty() {
            assert_eq!(next, after, "an empty page keeps the cursor");
            return (all, after);
        }
        assert_eq!(next, events.last().unwrap()["id"].as_i64().unwrap());
        all.extend(events);
        after = next;
    }
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

#[actix_web::test]
async fn changes_write_their_events_and_readers_get_them_in_order() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app
        .create_site_with(json!({ "name": "Shop", "greeting": "Hi" }))
        .await;
    let key = id(&site["widget_key"]);
    let site_id = id(&site["id"]);
    let alice = app.online_agent("Alice", 5).await;

    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-1", "Hello there").await;
    let conv = id(&first["conversation_id"]);
    // Alice gets it assigned (conversation.updated), replies, writes a note, resolves.
    eventually("assignment", || async {
        let c = app.conversation(&admin, &conv).await;
        (c["status"] == "open").then_some(())
    })
    .await;
    let (s, reply) = app
        .reply(&alice.token, &conv, "a-1", "Hi, Alice here", false)
        .await;
    assert_eq!(s, 201);
    let (s, note) = app
        .reply(&alice.token, &conv, "a-2", "VIP customer", true)
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            &format!("/api/conversations/{conv}/resolve"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);

    let events = eventually("all six events", || async {
        let (events, _) = drain(&app, &admin, 0).await;
        (events.len() >= 6).then_some(events)
    })
    .await;
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend: {ids:?}");
    // The assigner may hand the conversation out before or after the first message commits.
    let (assigned, messages): (Vec<&Value>, Vec<&Value>) = events[1..3]
        .iter()
        .partition(|e| e["type"] == "conversation.updated");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        (assigned.len(), messages.len(), types[0], &types[3..]),
        (
            1,
            1,
            "conversation.created",
            &[
                "message.created",
                "message.created",
                "conversation.resolved"
            ][..]
        ),
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(e["site_id"], site_id.as_str());
        assert_eq!(e["conversation_id"], conv.as_str());
        assert!(e["created_at"].is_string());
    }
    assert_eq!(events[0]["data"]["status"], "pending");
    assert_eq!(
        messages[0]["data"], first,
        "message.created carries the message"
    );
    assert_eq!(assigned[0]["data"]["assignee"]["id"], alice.id.as_str());
    assert_eq!(assigned[0]["data"]["status"], "open");
    assert_eq!(events[3]["data"], reply);
    assert_eq!(events[4]["data"], note);
    assert_eq!(
        events[4]["data"]["private"], true,
        "notes are marked private"
    );
    assert_eq!(events[5]["data"]["status"], "resolved");

    // A visitor writing to the resolved conversation reopens it: message + update.
    send_and_ack(&mut visitor, "v-2", "One more thing").await;
    let later = eventually("reopen events", || async {
        let (events, _) = drain(&app, &admin, ids[5]).await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    assert_eq!(later[0]["type"], "message.created");
    assert_eq!(later[1]["type"], "conversation.updated");
    assert_eq!(later[1]["data"]["status"], "open");

    // Paging: limit 2 from the start gives the first two, next_after the second's id.
    let (s, page) = app.get("/api/events?after=0&limit=2", &admin).await;
    assert_eq!(s, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], ids[1]);
}

#[actix_web::test]
async fn a_change_that_rolls_back_writes_no_event_and_a_failed_event_stores_no_message() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let key = app.create_site().await;
    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-1", "Hello").await;
    let conv = id(&first["conversation_id"]);
    // (Readable once every older transaction on the server ended: eventually.)
    let (before, cursor) = eventually("the first events", || async {
        let (events, cursor) = drain(&app, &admin, 0).await;
        (events.len() >= 2).then_some((events, cursor))
    })
    .await;
    assert_eq!(of_type(&before, "message.created").len(), 1);

    // The event insert fails for one message: its whole batch rolls back.
    app.sql_exec(
        "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.payload->>'body' = 'explode' THEN RAISE EXCEPTION 'refused'; END IF; \
         RETURN NEW; END $$",
    )
    .await;
    app.sql_exec(
        "CREATE TRIGGER refuse_event BEFORE INSERT ON events FOR EACH ROW \
         EXECUTE FUNCTION refuse_event()",
    )
    .await;
    let (status, _) = app.reply(&admin, &conv, "a-x", "explode", false).await;
    assert!(status >= 500, "the failed commit is reported: {status}");
    let stored = app
        .sql_i64("SELECT count(*) AS n FROM messages WHERE body = 'explode'")
        .await;
    assert_eq!(stored, 0, "no message without its event");

    // A conversation change rolled back by its caller leaves no event either.
    let mut conn = app.db().await;
    let conv_id: uuid::Uuid = conv.parse().unwrap();
    let outcome = conn
        .transaction(async |conn| {
            let resolved = kefu::db::conversations::resolve(conn, conv_id).await?;
            assert!(resolved.is_some());
            Err::<(), _>(kefu::error::AppError::conflict("changed my mind"))
        })
        .await;
    assert!(outcome.is_err());

    // A message after that goes through, and it is the only new event.
    let (status, _) = app.reply(&admin, &conv, "a-y", "fine", false).await;
    assert_eq!(status, 201);
    let after = eventually("the later message's event", || async {
        let (events, _) = drain(&app, &admin, cursor).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["data"]["body"], "fine");
    let c = app.conversation(&admin, &conv).await;
    assert_ne!(
        c["status"], "resolved",
        "the rolled back resolve did not happen"
    );
}

#[actix_web::test]
async fn readers_miss_nothing_while_transactions_commit_out_of_order() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let key = app.create_site().await;
    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-1", "Hello").await;
    let site_id = app
        .sql_rows("SELECT site_id::text AS s FROM conversations")
        .await[0]["s"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = first;
    let (_, start) = drain(&app, &admin, 0).await;

    // Writers whose transactions overlap and commit in an order unrelated to when they
    // inserted: a reader going by a plain sequence would skip the slow ones.
    const WRITERS: usize = 6;
    const EACH: usize = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = app.database_url.clone();
        let site_id = site_id.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = diesel_async::AsyncPgConnection::establish(&url)
                .await
                .unwrap();
            for i in 0..EACH {
                let pause = ((w * 7 + i * 13) % 5) as f64 * 0.01;
                diesel::sql_query("BEGIN").execute(&mut conn).await.unwrap();
                diesel::sql_query(format!(
                    "INSERT INTO events (kind, site_id, payload) \
                     VALUES ('test.tick', '{site_id}', '{{\"w\":{w},\"i\":{i}}}')"
                ))
                .execute(&mut conn)
                .await
                .unwrap();
                diesel::sql_query(format!("SELECT pg_sleep({pause})"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                diesel::sql_query("COMMIT")
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }));
    }
    // Meanwhile a reader follows the stream.
    let mut seen: Vec<Value> = Vec::new();
    let mut after = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < WRITERS * EACH {
        assert!(Instant::now() < deadline, "reader saw only {}", seen.len());
        let (events, next) = drain(&app, &admin, after).await;
        // (The first message's own events may only now be readable.)
        seen.extend(events.into_iter().filter(|e| e["type"] == "test.tick"));
        after = next;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let (rest, _) = drain(&app, &admin, after).await;
    assert!(rest.is_empty(), "nothing more: {rest:?}");
    let ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
    let keys: BTreeSet<(i64, i64)> = seen
        .iter()
        .map(|e| {
            (
                e["data"]["w"].as_i64().unwrap(),
                e["data"]["i"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), WRITERS * EACH, "every committed event, once");
}

#[actix_web::test]
async fn a_long_poll_wakes_up_when_an_event_arrives() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let key = app.create_site().await;
    let (_, after) = drain(&app, &admin, 0).await;

    // Nothing happens: the poll answers empty after its wait.
    let started = Instant::now();
    let (s, page) = app
        .get(&format!("/api/events?after={after}&wait=1"), &admin)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_after"], after);
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");

    // A message while a 25 s poll waits: the poll answers with it well before then.
    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/events?after={after}&wait=25"));
        let admin = admin.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let res = http.get(url).bearer_auth(admin).send().await.unwrap();
            let body: Value = res.json().await.unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (mut visitor, _) = app.visitor(&key).await;
    send_and_ack(&mut visitor, "v-1", "wake up").await;
    let (took, body) = poll.await.unwrap();
    assert!(took < Duration::from_secs(15), "woke after {took:?}");
    let events = body["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{body}");
    assert_eq!(events[0]["type"], "conversation.created");
}

#[actix_web::test]
async fn cursors_are_stored_per_consumer_and_access_is_checked() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let (s, c) = app.get("/api/event-cursors/my-bot", &admin).await;
    assert_eq!(s, 200);
    assert_eq!(c, json!({ "name": "my-bot", "after": 0 }));
    let (s, c) = app
        .put("/api/event-cursors/my-bot", &admin, json!({ "after": 42 }))
        .await;
    assert_eq!(s, 200, "{c}");
    let (_, c) = app.get("/api/event-cursors/my-bot", &admin).await;
    assert_eq!(c["after"], 42);
    let (_, other) = app.get("/api/event-cursors/other", &admin).await;
    assert_eq!(other["after"], 0, "each consumer has its own");

    // Bad input.
    for (path, what) in [
        ("/api/events?limit=0", "limit 0"),
        ("/api/events?limit=1001", "limit too big"),
        ("/api/events?wait=31", "wait too long"),
        ("/api/events?after=-1", "negative after"),
        ("/api/events?after=abc", "after not a number"),
        ("/api/event-cursors/bad%20name", "cursor name"),
    ] {
        let (s, body) = app.get(path, &admin).await;
        assert_eq!(s, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let (s, _) = app
        .put("/api/event-cursors/x", &admin, json!({ "after": "soon" }))
        .await;
    assert_eq!(s, 400);

    // Agents may not read the stream; nobody without a token.
    let bob = app.create_agent("Bob", 5).await;
    let (s, _) = app.get("/api/events", &bob.token).await;
    assert_eq!(s, 403);
    let (s, _) = app.get("/api/event-cursors/my-bot", &bob.token).await;
    assert_eq!(s, 403);
    let (s, _) = app
        .request(reqwest::Method::GET, "/api/events", None, None)
        .await;
    assert_eq!(s, 401);
}

#[actix_web::test]
async fn retention_prunes_old_events_only_once_every_cursor_passed_them() {
    // No in-process worker: its own cursor would be one more consumer to wait for.
    let app = TestApp::spawn_with(|s| s.worker = false).await;
    let admin = app.admin_token().await;
    let key = app.create_site().await;
    let (mut visitor, _) = app.visitor(&key).await;
    send_and_ack(&mut visitor, "v-1", "old news").await;
    let (events, last) = eventually("the first events", || async {
        let (events, last) = drain(&app, &admin, 0).await;
        (events.len() >= 2).then_some((events, last))
    })
    .await;
    assert_eq!(events.len(), 2);
    app.sql_exec("UPDATE events SET created_at = now() - interval '10 days'")
        .await;
    app.put("/api/event-cursors/slow-bot", &admin, json!({ "after": 0 }))
        .await;

    let mut conn = app.db().await;
    let pruned = kefu::db::events::prune(&mut conn, 7 * 86_400)
        .await
        .unwrap();
    assert_eq!(pruned, 0, "the slow consumer has not read them yet");
    app.put(
        "/api/event-cursors/slow-bot",
        &admin,
        json!({ "after": events[0]["id"] }),
    )
    .await;
    let pruned = kefu::db::events::prune(&mut conn, 7 * 86_400)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only what it passed");
    app.put(
        "/api/event-cursors/slow-bot",
        &admin,
        json!({ "after": last }),
    )
    .await;
    let pruned = kefu::db::events::prune(&mut conn, 30 * 86_400)
        .await
        .unwrap();
    assert_eq!(pruned, 0, "younger than the retention");
    let pruned = kefu::db::events::prune(&mut conn, 7 * 86_400)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let (rest, _) = drain(&app, &admin, 0).await;
    assert!(rest.is_empty());
}
