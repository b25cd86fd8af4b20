//! Export: conversations and messages as CSV and JSON, filtered by site, dates and status,
//! streamed in chunks (the first bytes arrive before the whole export is read).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// RFC 4180 records (quoted fields with `""`, CRLF line ends, newlines inside quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "ends with a line end");
    rows
}

/// The body of an export, chunk by chunk as it arrived.
async fn download(
    app: &TestApp,
    token: &str,
    path: &str,
) -> (reqwest::header::HeaderMap, Vec<bytes::Bytes>) {
    let res = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{path}");
    let headers = res.headers().clone();
    let mut chunks = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(c) = stream.next().await {
        chunks.push(c.unwrap());
    }
    (headers, chunks)
}

fn text(chunks: &[bytes::Bytes]) -> String {
    String::from_utf8(chunks.concat()).unwrap()
}

/// 3,000 conversations over 30 days (statuses in turn), two messages each.
async fn seed(app: &TestApp, site_id: &str) {
    app.sql_exec(&format!(
        "INSERT INTO visitors (id, site_id, token_hash, name, email) \
         SELECT gen_random_uuid(), '{site_id}', sha256(('seed' || i)::bytea), 'Visitor ' || i, \
           'v' || lpad(i::text, 5, '0') || '@example.com' \
         FROM generate_series(1, 3000) i"
    ))
    .await;
    app.sql_exec(&format!(
        "INSERT INTO conversations (id, site_id, visitor_id, status, last_seq, created_at, \
           updated_at, queued_at) \
         SELECT gen_random_uuid(), '{site_id}', id, \
           (ARRAY['pending','open','resolved'])[1 + n % 3], 2, ts, ts + interval '2 minutes', ts \
         FROM (SELECT id, n, timestamptz '2026-10-01 00:00:00+00' + (n % 30) * interval '1 day' \
                 + n * interval '1 second' AS ts \
               FROM (SELECT id, row_number() OVER (ORDER BY email) AS n FROM visitors \
                     WHERE email LIKE 'v%@example.com') v) t"
    ))
    .await;
    app.sql_exec(&format!(
        "INSERT INTO messages (id, conversation_id, seq, sender_type, private, body, created_at) \
         SELECT gen_random_uuid(), c.id, s, 'visitor', false, 'message ' || s, \
           c.created_at + s * interval '1 minute' \
         FROM conversations c, generate_series(1, 2) s \
         WHERE c.site_id = '{site_id}' AND c.last_seq = 2"
    ))
    .await;
}

#[actix_web::test]
async fn conversations_export_as_streamed_csv_with_filters() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app
        .create_site_with(json!({ "name": "Big, \"Shop\"" }))
        .await;
    let other = app.create_site_with(json!({ "name": "Other" })).await;
    let site_id = id(&site["id"]);
    seed(&app, &site_id).await;
    let (mut v, _) = app.visitor(&id(&other["widget_key"])).await;
    send_and_ack(&mut v, "o-1", "not in this site's export").await;

    let (headers, chunks) = download(
        &app,
        &admin,
        &format!("/api/export/conversations?site={site_id}"),
    )
    .await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"kefu-conversations-"));
    assert!(
        headers.get("content-length").is_none(),
        "streamed, length unknown"
    );
    assert_eq!(headers["transfer-encoding"], "chunked");
    let body = text(&chunks);
    assert!(
        chunks.len() > 1 && chunks[0].len() < body.len() / 2,
        "the first bytes came before the rest: {} chunks, first {} of {} bytes",
        chunks.len(),
        chunks[0].len(),
        body.len()
    );
    let rows = parse_csv(&body);
    assert_eq!(rows[0][..3], ["id", "site_id", "site_name"]);
    assert_eq!(rows.len(), 3001, "header + every conversation of the site");
    let ids: BTreeSet<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    let expected: BTreeSet<String> = app
        .sql_rows(&format!(
            "SELECT id::text AS id FROM conversations WHERE site_id = '{site_id}'"
        ))
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected.iter().map(|s| s.as_str()).collect());
    assert!(
        rows[1..].iter().all(|r| r[2] == "Big, \"Shop\""),
        "quoted name"
    );
    assert!(rows[1..].iter().all(|r| r[9] == "2"), "message counts");
    let created: Vec<&str> = rows[1..].iter().map(|r| r[10].as_str()).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // Status and dates narrow it down exactly as the database counts.
    let (_, chunks) = download(
        &app,
        &admin,
        &format!(
            "/api/export/conversations?site={site_id}&status=resolved&from=2026-10-05&to=2026-10-09"
        ),
    )
    .await;
    let rows = parse_csv(&text(&chunks));
    let n = app
        .sql_i64(&format!(
            "SELECT count(*) AS n FROM conversations WHERE site_id = '{site_id}' \
             AND status = 'resolved' AND created_at >= '2026-10-05' AND created_at < '2026-10-10'"
        ))
        .await;
    assert!(n > 100);
    assert_eq!(rows.len() as i64, n + 1);
    assert!(rows[1..].iter().all(|r| r[8] == "resolved"));
    assert!(rows[1..]
        .iter()
        .all(|r| r[10].as_str() >= "2026-10-05" && r[10].as_str() < "2026-10-10"));
}

#[actix_web::test]
async fn messages_export_as_json_and_csv_keeps_every_message_exactly() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let site_id = id(&site["id"]);
    seed(&app, &site_id).await;
    // One conversation through the real API, with awkward text and a note.
    let (mut v, _) = app.visitor(&id(&site["widget_key"])).await;
    let tricky = "Hello, \"world\"\n=SUM(A1) 你好";
    let first = send_and_ack(&mut v, "v-1", tricky).await;
    let conv = id(&first["conversation_id"]);
    let (s, _) = app
        .reply(&admin, &conv, "n-1", "note: refund approved", true)
        .await;
    assert_eq!(s, 201);

    let (headers, chunks) = download(
        &app,
        &admin,
        &format!("/api/export/messages?site={site_id}&format=json"),
    )
    .await;
    assert_eq!(headers["content-type"], "application/json");
    assert!(chunks.len() > 1, "streamed in pieces");
    let all: Vec<Value> = serde_json::from_str(&text(&chunks)).unwrap();
    assert_eq!(all.len(), 6002);
    let mine: Vec<&Value> = all
        .iter()
        .filter(|m| m["conversation_id"] == conv.as_str())
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0]["body"], tricky);
    assert_eq!(mine[0]["seq"], 1);
    assert_eq!(mine[1]["private"], true, "notes are part of the export");
    let unique: BTreeSet<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), all.len(), "no message twice");

    // CSV of the same, narrowed to the API conversation's day: the text survives quoting,
    // and the formula is defused.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, chunks) = download(
        &app,
        &admin,
        &format!("/api/export/messages?site={site_id}&from={today}&to={today}"),
    )
    .await;
    let rows = parse_csv(&text(&chunks));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0],
        [
            "id",
            "conversation_id",
            "seq",
            "sender_type",
            "sender_id",
            "private",
            "body",
            "created_at"
        ]
    );
    assert_eq!(rows[1][6], "Hello, \"world\"\n=SUM(A1) 你好");
    assert_eq!(rows[2][5], "true");
    assert_eq!(rows[2][6], "note: refund approved");

    // Dates of the seeded messages: day 2026-10-07 has 100 conversations × 2 messages.
    let (_, chunks) = download(
        &app,
        &admin,
        &format!("/api/export/messages?site={site_id}&format=json&from=2026-10-07&to=2026-10-07"),
    )
    .await;
    let day: Vec<Value> = serde_json::from_str(&text(&chunks)).unwrap();
    let n = app
        .sql_i64("SELECT count(*) AS n FROM messages WHERE created_at >= '2026-10-07' AND created_at < '2026-10-08'")
        .await;
    assert_eq!(day.len() as i64, n);
    assert!(n >= 190);

    // An empty export is still valid JSON.
    let (_, chunks) = download(
        &app,
        &admin,
        &format!("/api/export/messages?site={site_id}&format=json&from=2020-01-01&to=2020-01-02"),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text(&chunks)).unwrap(),
        json!([])
    );
}

#[actix_web::test]
async fn exports_are_for_admins_and_check_their_filters() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let bob = app.create_agent("Bob", 5).await;
    assert_eq!(
        app.get("/api/export/conversations", &bob.token).await.0,
        403
    );
    assert_eq!(app.get("/api/export/messages", &bob.token).await.0, 403);
    for q in [
        "format=xml",
        "site=abc",
        "status=closed",
        "from=yesterday",
        "from=2026-12-05&to=2026-12-01",
    ] {
        for what in ["conversations", "messages"] {
            let (s, body) = app.get(&format!("/api/export/{what}?{q}"), &admin).await;
            assert_eq!(s, 400, "{what}?{q}: {body}");
            assert_eq!(body["error"]["code"], "bad_request");
        }
    }
}
