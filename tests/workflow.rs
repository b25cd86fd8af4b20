//! Workflow features (issue 9) through the real HTTP API and WebSockets, on PostgreSQL and
//! Redis: attachments (upload, download, limits, types, who may read them), canned
//! responses (permissions), labels (inbox filter), visitor custom attributes, and
//! full-text search in English and Chinese.

mod common;

use common::{id, send_and_ack, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
const PDF: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Raw {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("content-type", content_type);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let res = req.send().await.expect("HTTP request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body").to_vec();
    Raw {
        status,
        headers,
        bytes,
    }
}

async fn visitor_upload(app: &TestApp, site: &str, token: &str, name: &str, bytes: &[u8]) -> Raw {
    raw(
        app,
        Method::POST,
        &format!("/api/visitor/attachments?site={site}&token={token}&name={name}"),
        None,
        "text/plain",
        bytes.to_vec(),
    )
    .await
}

async fn agent_upload(app: &TestApp, token: &str, conv: &str, name: &str, bytes: &[u8]) -> Raw {
    raw(
        app,
        Method::POST,
        &format!("/api/conversations/{conv}/attachments?name={name}"),
        Some(token),
        "application/octet-stream",
        bytes.to_vec(),
    )
    .await
}

async fn visitor_download(app: &TestApp, url: &str, site: &str, token: &str) -> Raw {
    raw(
        app,
        Method::GET,
        &format!("{url}?site={site}&token={token}"),
        None,
        "text/plain",
        Vec::new(),
    )
    .await
}

async fn agent_download(app: &TestApp, url: &str, token: &str) -> Raw {
    raw(app, Method::GET, url, Some(token), "text/plain", Vec::new()).await
}

/// Headers that keep a download inert, whatever it holds.
fn assert_inert(r: &Raw) {
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    let csp = r.header("content-security-policy");
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "csp: {csp}"
    );
    let ct = r.header("content-type");
    assert!(
        !ct.contains("html")
            && !ct.contains("svg")
            && !ct.contains("javascript")
            && !ct.contains("xml"),
        "type: {ct}"
    );
}

#[actix_web::test]
async fn attachments_round_trip_only_to_participants() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let agent = app.online_agent("Ann", 5).await;
    let (mut v1, welcome) = app.visitor(&site).await;
    let t1 = id(&welcome["token"]);

    // A visitor uploads an image (declared as text/plain: the bytes decide) and sends it.
    let up = visitor_upload(&app, &site, &t1, "cat.png", PNG).await;
    assert_eq!(up.status, 201, "upload: {}", up.json());
    let file = up.json();
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(file["name"], "cat.png");
    assert_eq!(file["size"], PNG.len() as i64);
    let url = id(&file["url"]);
    v1.send_json(json!({"type": "message.send", "client_msg_id": "f1", "body": "", "attachments": [file["id"]]}))
        .await;
    let ack = v1
        .recv_until_where("message.ack", |f| f["client_msg_id"] == "f1")
        .await;
    let msg = &ack["message"];
    assert_eq!(msg["attachments"][0]["id"], file["id"], "ack: {ack}");
    assert_eq!(msg["body"], "");
    let conv = id(&msg["conversation_id"]);
    // A resend answers the original.
    v1.send_json(json!({"type": "message.send", "client_msg_id": "f1", "body": "", "attachments": [file["id"]]}))
        .await;
    let again = v1
        .recv_until_where("message.ack", |f| f["client_msg_id"] == "f1")
        .await;
    assert_eq!(again["message"]["id"], msg["id"]);

    // The agent sees it in the history and downloads the same bytes, inline.
    let history = app.history(&agent.token, &conv).await;
    assert_eq!(history[0]["attachments"][0]["url"], url.as_str());
    let got = agent_download(&app, &url, &agent.token).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, PNG);
    assert_eq!(got.header("content-type"), "image/png");
    assert!(
        got.header("content-disposition").starts_with("inline"),
        "{:?}",
        got.headers
    );
    assert_inert(&got);
    // The visitor reads its own file back.
    let mine = visitor_download(&app, &url, &site, &t1).await;
    assert_eq!((mine.status, mine.bytes.as_slice()), (200, PNG));

    // Another visitor, no credentials, a bad token: nothing.
    let (mut v2, w2) = app.visitor(&site).await;
    let t2 = id(&w2["token"]);
    assert_eq!(visitor_download(&app, &url, &site, &t2).await.status, 404);
    assert_eq!(agent_download(&app, &url, "not-a-token").await.status, 401);
    let bare = raw(&app, Method::GET, &url, None, "text/plain", Vec::new()).await;
    assert_eq!(bare.status, 401, "the URL alone grants nothing");
    // Nor may the other visitor send the first one's file.
    v2.send_json(json!({"type": "message.send", "client_msg_id": "steal", "body": "x", "attachments": [file["id"]]}))
        .await;
    let err = v2.recv_until("error").await;
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("bad_request"), Some("steal"))
    );
    // Refused before it opened a conversation: only the first visitor's exists.
    assert_eq!(app.sql_i64("SELECT count(*) FROM conversations").await, 1);

    // An agent's file in a private note stays hidden from the visitor; sent in a reply it
    // reaches the visitor live, as a download.
    let note_file = agent_upload(&app, &agent.token, &conv, "internal.pdf", PDF).await;
    assert_eq!(note_file.status, 201, "{}", note_file.json());
    let note_file = note_file.json();
    assert_eq!(note_file["content_type"], "application/pdf");
    let (s, note) = app
        .post(
            &format!("/api/conversations/{conv}/messages"),
            &agent.token,
            json!({"client_msg_id": "n1", "body": "for us only", "private": true, "attachments": [note_file["id"]]}),
        )
        .await;
    assert_eq!(s, 201, "{note}");
    let note_url = id(&note_file["url"]);
    assert_eq!(
        visitor_download(&app, &note_url, &site, &t1).await.status,
        404
    );
    let reply_file = agent_upload(&app, &agent.token, &conv, "发票 1.pdf", PDF)
        .await
        .json();
    let (s, _) = app
        .post(
            &format!("/api/conversations/{conv}/messages"),
            &agent.token,
            json!({"client_msg_id": "r1", "attachments": [reply_file["id"]]}),
        )
        .await;
    assert_eq!(s, 201);
    let created = v1
        .recv_until_where("message.created", |f| f["message"]["client_msg_id"] == "r1")
        .await;
    let reply_url = id(&created["message"]["attachments"][0]["url"]);
    let pdf = visitor_download(&app, &reply_url, &site, &t1).await;
    assert_eq!((pdf.status, pdf.bytes.as_slice()), (200, PDF));
    let disposition = pdf.header("content-disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''%E5%8F%91%E7%A5%A8%201.pdf"),
        "{disposition}"
    );
    assert_inert(&pdf);
    // Agents cannot send a file uploaded for another conversation, nor a visitor's.
    let (s, e) = app
        .post(
            &format!("/api/conversations/{conv}/messages"),
            &agent.token,
            json!({"client_msg_id": "r2", "attachments": [file["id"]]}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_request")));
    // A message with neither text nor files is still refused.
    let (s, _) = app
        .post(
            &format!("/api/conversations/{conv}/messages"),
            &agent.token,
            json!({"client_msg_id": "r3", "body": "  "}),
        )
        .await;
    assert_eq!(s, 400);

    // The bytes are in the local store directory.
    let stored = walk(&app.settings.attachment_dir);
    assert_eq!(stored.len(), 3, "{stored:?}");
    app.cleanup().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[actix_web::test]
async fn attachment_limits_and_types() {
    let app = TestApp::spawn_with(|s| s.attachment_max_bytes = 64 * 1024).await;
    let site = app.create_site().await;
    let (_v, welcome) = app.visitor(&site).await;
    let token = id(&welcome["token"]);

    // Over the limit: 413 too_large, nothing stored.
    let mut big = PNG.to_vec();
    big.resize(100 * 1024, 0);
    let r = visitor_upload(&app, &site, &token, "big.png", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "too_large");
    // Programs, HTML and SVG are refused whatever they are called.
    for (name, bytes) in [
        (
            "page.png",
            &b"<!DOCTYPE html><html><script>alert(1)</script></html>"[..],
        ),
        (
            "logo.svg",
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>"[..],
        ),
        (
            "x.svg",
            &b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>"[..],
        ),
        (
            "run.exe",
            &b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"[..],
        ),
        ("empty.txt", &b""[..]),
    ] {
        let r = visitor_upload(&app, &site, &token, name, bytes).await;
        assert_eq!(r.status, 400, "{name}: {}", r.json());
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }
    assert!(walk(&app.settings.attachment_dir).is_empty());

    // Text with markup inside is accepted as plain text and never served as a page.
    let text = b"notes\n<script>alert(document.cookie)</script>\n";
    let up = visitor_upload(&app, &site, &token, "notes.html", text).await;
    assert_eq!(up.status, 201, "{}", up.json());
    let file = up.json();
    assert_eq!(file["content_type"], "text/plain; charset=utf-8");
    let got = visitor_download(&app, &id(&file["url"]), &site, &token).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "text/plain; charset=utf-8");
    assert!(got.header("content-disposition").starts_with("attachment"));
    assert_inert(&got);
    // The polling transport sends files like the socket.
    let frame = json!({"type": "message.send", "client_msg_id": "p1", "attachments": [file["id"]]});
    let r = raw(
        &app,
        Method::POST,
        &format!("/api/visitor/send?site={site}&token={token}"),
        None,
        "text/plain",
        frame.to_string().into_bytes(),
    )
    .await;
    let frames = r.json()["frames"].clone();
    let ack = frames
        .as_array()
        .and_then(|f| f.iter().find(|f| f["type"] == "message.ack"))
        .unwrap_or_else(|| panic!("no ack: {frames}"));
    assert_eq!(ack["message"]["attachments"][0]["name"], "notes.html");
    // Names cannot climb out of anything.
    let up = visitor_upload(&app, &site, &token, "..%2F..%2Fetc%2Fpasswd", PNG).await;
    assert_eq!(up.json()["name"], "passwd");
    app.cleanup().await;
}

#[actix_web::test]
async fn canned_responses_permissions() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site_a = app.create_site_with(json!({"name": "A"})).await;
    let site_b = app.create_site_with(json!({"name": "B"})).await;
    let (a_id, b_id) = (id(&site_a["id"]), id(&site_b["id"]));
    let ann = app.create_agent("Ann", 5).await;
    let bob = app.create_agent("Bob", 5).await;
    let path = "/api/canned_responses";

    let (s, shared) = app
        .post(
            path,
            &admin,
            json!({"shortcut": "refund", "body": "Refunds take 3-5 days.", "shared": true}),
        )
        .await;
    assert_eq!(s, 201, "{shared}");
    assert_eq!(shared["shared"], true);
    let (s, site_only) = app
        .post(
            path,
            &admin,
            json!({"shortcut": "hours", "body": "We open at 9.", "shared": true, "site_id": a_id}),
        )
        .await;
    assert_eq!(s, 201, "{site_only}");
    let (s, e) = app
        .post(
            path,
            &ann.token,
            json!({"shortcut": "x", "body": "y", "shared": true}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, own) = app
        .post(
            path,
            &ann.token,
            json!({"shortcut": "thanks", "title": "Thank you", "body": "Thanks for waiting!"}),
        )
        .await;
    assert_eq!(s, 201, "{own}");
    assert_eq!(own["shared"], false);
    let (s, _) = app
        .post(
            path,
            &ann.token,
            json!({"shortcut": "THANKS", "body": "again"}),
        )
        .await;
    assert_eq!(s, 409, "shortcuts are unique per owner, case-insensitively");
    let (s, _) = app
        .post(
            path,
            &bob.token,
            json!({"shortcut": "thanks", "body": "Bob's"}),
        )
        .await;
    assert_eq!(s, 201, "another agent's scope");
    for bad in [
        json!({"shortcut": "a b", "body": "x"}),
        json!({"shortcut": "ok", "body": "  "}),
        json!({"shortcut": "", "body": "x"}),
    ] {
        let (s, _) = app.post(path, &ann.token, bad.clone()).await;
        assert_eq!(s, 400, "{bad}");
    }

    let shortcuts = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| id(&c["shortcut"]))
            .collect()
    };
    let (_, list) = app.get(path, &ann.token).await;
    assert_eq!(shortcuts(&list), ["hours", "refund", "thanks"]);
    let (_, list) = app.get(&format!("{path}?site_id={b_id}"), &ann.token).await;
    assert_eq!(
        shortcuts(&list),
        ["refund", "thanks"],
        "site A's one is not offered on site B"
    );
    let (_, list) = app.get(path, &bob.token).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|c| c["id"] != own["id"]),
        "Ann's own stays hers"
    );

    let one = |c: &Value| format!("{path}/{}", id(&c["id"]));
    let patch = |token: &str, c: &Value, body: Value| {
        let (token, p) = (token.to_string(), one(c));
        let app = &app;
        async move {
            app.request(Method::PATCH, &p, Some(&token), Some(&body))
                .await
        }
    };
    assert_eq!(
        patch(&ann.token, &shared, json!({"body": "mine now"}))
            .await
            .0,
        403
    );
    assert_eq!(
        patch(&bob.token, &own, json!({"body": "hijack"})).await.0,
        404
    );
    assert_eq!(
        patch(&admin, &own, json!({"body": "admin edit"})).await.0,
        404
    );
    let (s, edited) = patch(
        &ann.token,
        &own,
        json!({"body": "Thanks a lot for waiting!"}),
    )
    .await;
    assert_eq!(
        (s, edited["body"].as_str()),
        (200, Some("Thanks a lot for waiting!"))
    );
    let (s, edited) = patch(&admin, &shared, json!({"site_id": b_id})).await;
    assert_eq!((s, edited["site_id"].as_str()), (200, Some(b_id.as_str())));
    assert_eq!(
        app.request(Method::DELETE, &one(&shared), Some(&bob.token), None)
            .await
            .0,
        403
    );
    assert_eq!(
        app.request(Method::DELETE, &one(&own), Some(&bob.token), None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.request(Method::DELETE, &one(&own), Some(&ann.token), None)
            .await
            .0,
        204
    );
    let (_, list) = app.get(path, &ann.token).await;
    assert_eq!(shortcuts(&list), ["hours", "refund"]);
    assert_eq!(app.request(Method::GET, path, None, None).await.0, 401);
    let _ = site_only;
    app.cleanup().await;
}

#[actix_web::test]
async fn labels_filter_the_inbox() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app.create_site().await;
    let agent = app.create_agent("Ann", 5).await;

    let (s, _) = app
        .post("/api/labels", &agent.token, json!({"name": "VIP"}))
        .await;
    assert_eq!(s, 403, "agents do not manage labels");
    let (s, vip) = app
        .post(
            "/api/labels",
            &admin,
            json!({"name": "VIP", "color": "#FF0000"}),
        )
        .await;
    assert_eq!(s, 201, "{vip}");
    assert_eq!(vip["color"], "#ff0000");
    let (s, _) = app
        .post("/api/labels", &admin, json!({"name": "vip"}))
        .await;
    assert_eq!(s, 409);
    let (s, _) = app
        .post(
            "/api/labels",
            &admin,
            json!({"name": "Bad", "color": "red"}),
        )
        .await;
    assert_eq!(s, 400);
    let (_, refund) = app
        .post("/api/labels", &admin, json!({"name": "退款"}))
        .await;
    let (_, labels) = app.get("/api/labels", &agent.token).await;
    assert_eq!(labels["items"].as_array().map(Vec::len), Some(2));

    let (mut v1, _) = app.visitor(&site).await;
    let c1 = id(&send_and_ack(&mut v1, "a", "first").await["conversation_id"]);
    let (mut v2, _) = app.visitor(&site).await;
    let c2 = id(&send_and_ack(&mut v2, "b", "second").await["conversation_id"]);

    let mut live = app.agent_ws(&agent.token).await;
    let (s, conv) = app
        .post(
            &format!("/api/conversations/{c1}/labels"),
            &agent.token,
            json!({"label_id": vip["id"]}),
        )
        .await;
    assert_eq!(s, 200, "{conv}");
    assert_eq!(conv["labels"][0]["name"], "VIP");
    let updated = live
        .recv_until_where("conversation.updated", |f| {
            f["conversation_id"] == c1.as_str()
        })
        .await;
    assert_eq!(updated["conversation"]["labels"][0]["id"], vip["id"]);
    // Twice is the same.
    let (s, conv) = app
        .post(
            &format!("/api/conversations/{c1}/labels"),
            &agent.token,
            json!({"label_id": vip["id"]}),
        )
        .await;
    assert_eq!((s, conv["labels"].as_array().map(Vec::len)), (200, Some(1)));
    app.post(
        &format!("/api/conversations/{c2}/labels"),
        &agent.token,
        json!({"label_id": refund["id"]}),
    )
    .await;
    let (s, _) = app
        .post(
            &format!("/api/conversations/{c2}/labels"),
            &agent.token,
            json!({"label_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(s, 404);

    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| id(&c["id"]))
            .collect()
    };
    let (_, all) = app
        .get("/api/conversations?assignee=any", &agent.token)
        .await;
    assert_eq!(ids(&all).len(), 2);
    assert!(all["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|c| c["labels"].is_array()));
    let (_, only) = app
        .get(
            &format!("/api/conversations?assignee=any&label={}", id(&vip["id"])),
            &agent.token,
        )
        .await;
    assert_eq!(ids(&only), std::slice::from_ref(&c1));
    let (s, _) = app.get("/api/conversations?label=nope", &agent.token).await;
    assert_eq!(s, 400);
    let one = app.conversation(&agent.token, &c2).await;
    assert_eq!(one["labels"][0]["name"], "退款");

    let (s, conv) = app
        .request(
            Method::DELETE,
            &format!("/api/conversations/{c1}/labels/{}", id(&vip["id"])),
            Some(&agent.token),
            None,
        )
        .await;
    assert_eq!((s, conv["labels"].as_array().map(Vec::len)), (200, Some(0)));
    let (_, only) = app
        .get(
            &format!("/api/conversations?assignee=any&label={}", id(&vip["id"])),
            &agent.token,
        )
        .await;
    assert!(ids(&only).is_empty());
    // Deleting a label takes it off every conversation.
    let (s, _) = app
        .request(
            Method::DELETE,
            &format!("/api/labels/{}", id(&refund["id"])),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        app.conversation(&agent.token, &c2).await["labels"],
        json!([])
    );
    app.cleanup().await;
}

#[actix_web::test]
async fn custom_attributes_by_agents_and_visitors() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let agent = app.create_agent("Ann", 5).await;
    let (mut v, welcome) = app.visitor(&site).await;
    let token = id(&welcome["token"]);
    let visitor_id = id(&welcome["visitor"]["id"]);
    let conv = id(&send_and_ack(&mut v, "a", "hello").await["conversation_id"]);
    // Cache the profile first, so a stale cache would show.
    assert_eq!(
        app.conversation(&agent.token, &conv).await["visitor"]["attributes"],
        json!({})
    );

    let path = format!("/api/visitors/{visitor_id}/attributes");
    let (s, body) = app
        .request(
            Method::PATCH,
            &path,
            Some(&agent.token),
            Some(&json!({"plan": "pro", "seats": 3, "vip": true})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["attributes"],
        json!({"plan": "pro", "seats": 3, "vip": true})
    );
    let seen = app.conversation(&agent.token, &conv).await;
    assert_eq!(seen["visitor"]["attributes"]["plan"], "pro");

    for bad in [
        json!({"nested": {"a": 1}}),
        json!({"list": [1]}),
        json!({ "k".repeat(65): 1 }),
        json!({"v": "x".repeat(1001)}),
        json!("not an object"),
    ] {
        let (s, e) = app
            .request(Method::PATCH, &path, Some(&agent.token), Some(&bad))
            .await;
        assert_eq!(s, 400, "{bad}: {e}");
    }
    let many: serde_json::Map<String, Value> =
        (0..48).map(|i| (format!("k{i}"), json!(i))).collect();
    let (s, e) = app
        .request(
            Method::PATCH,
            &path,
            Some(&agent.token),
            Some(&Value::Object(many)),
        )
        .await;
    assert_eq!(s, 400, "51 keys in all: {e}");
    let (s, _) = app
        .request(
            Method::PATCH,
            &format!("/api/visitors/{}/attributes", uuid::Uuid::new_v4()),
            Some(&agent.token),
            Some(&json!({"a": 1})),
        )
        .await;
    assert_eq!(s, 404);

    // The visitor (the widget's kefu.setAttributes): text/plain JSON, null removes a key.
    let r = raw(
        &app,
        Method::POST,
        &format!("/api/visitor/attributes?site={site}&token={token}"),
        None,
        "text/plain",
        r#"{"plan": null, "company": "Acme 有限公司"}"#.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        r.json()["visitor"]["attributes"],
        json!({"seats": 3, "vip": true, "company": "Acme 有限公司"})
    );
    let r = raw(
        &app,
        Method::POST,
        &format!("/api/visitor/attributes?site={site}&token=wrong"),
        None,
        "text/plain",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 401);
    let seen = app.conversation(&agent.token, &conv).await;
    assert_eq!(seen["visitor"]["attributes"]["company"], "Acme 有限公司");
    // The socket's profile.update follows the same rules.
    v.send_json(json!({"type": "profile.update", "attributes": {"deep": {"x": 1}}}))
        .await;
    let err = v.recv_until("error").await;
    assert_eq!(err["code"], "bad_request");
    v.send_json(json!({"type": "profile.update", "attributes": {"tier": "gold"}}))
        .await;
    let upd = v.recv_until("visitor.updated").await;
    assert_eq!(upd["visitor"]["attributes"]["tier"], "gold");
    assert_eq!(upd["visitor"]["attributes"]["company"], "Acme 有限公司");
    app.cleanup().await;
}

#[actix_web::test]
async fn search_english_chinese_and_visitors() {
    let app = TestApp::spawn().await;
    let site = app.create_site().await;
    let agent = app.create_agent("Ann", 5).await;

    let (mut a, _) = app.visitor(&site).await;
    let m_en = send_and_ack(&mut a, "1", "I want a refund for my order").await;
    let (mut b, _) = app.visitor(&site).await;
    b.send_json(
        json!({"type": "profile.update", "name": "Zhang Wei", "email": "zhang.wei@example.cn"}),
    )
    .await;
    b.recv_until("visitor.updated").await;
    let m_zh = send_and_ack(&mut b, "2", "你好，我要退款，订单还没到").await;
    let conv_b = id(&m_zh["conversation_id"]);
    let (s, note) = app
        .reply(
            &agent.token,
            &conv_b,
            "n",
            "Refunded by bank transfer. 退款已处理",
            true,
        )
        .await;
    assert_eq!(s, 201);
    let (mut c, _) = app.visitor(&site).await;
    send_and_ack(&mut c, "3", "hello there, shipping question").await;

    let search = |q: &str| {
        let path = format!("/api/search?q={}", urlencode(q));
        let app = &app;
        let token = agent.token.clone();
        async move {
            let (s, body) = app.get(&path, &token).await;
            assert_eq!(s, 200, "{body}");
            body
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|h| id(&h["message"]["id"]))
            .collect()
    };

    // English with stemming: "refunds" finds "refund" and the note's "Refunded".
    let r = search("refunds").await;
    assert_eq!(
        ids(&r),
        [id(&note["id"]), id(&m_en["id"])],
        "newest first: {r}"
    );
    let hit = &r["messages"][0];
    assert_eq!(hit["message"]["private"], true, "agents find notes");
    assert_eq!(hit["conversation"]["id"], conv_b.as_str());
    assert_eq!(hit["visitor"]["name"], "Zhang Wei");
    // Chinese: a two-character word inside a sentence without spaces.
    let r = search("退款").await;
    assert_eq!(ids(&r), [id(&note["id"]), id(&m_zh["id"])], "{r}");
    let r = search("退款已").await;
    assert_eq!(ids(&r), [id(&note["id"])]);
    let r = search("订单").await;
    assert_eq!(ids(&r), [id(&m_zh["id"])]);
    assert!(ids(&search("发货").await).is_empty());
    // Mixed query: both halves required.
    assert_eq!(ids(&search("bank 退款").await), [id(&note["id"])]);
    // Visitors by name or email, with their conversation.
    let r = search("zhang").await;
    assert_eq!(r["visitors"][0]["name"], "Zhang Wei");
    assert_eq!(r["visitors"][0]["conversation_id"], conv_b.as_str());
    let r = search("example.cn").await;
    assert_eq!(r["visitors"].as_array().map(Vec::len), Some(1));
    assert!(search("100%").await["visitors"]
        .as_array()
        .expect("visitors")
        .is_empty());

    let (s, one) = app.get("/api/search?q=refund&limit=1", &agent.token).await;
    assert_eq!(
        (s, ids(&one)),
        (200, vec![id(&note["id"])]),
        "limit keeps the newest"
    );
    let (s, _) = app.get("/api/search?q=", &agent.token).await;
    assert_eq!(s, 400);
    assert_eq!(
        app.request(Method::GET, "/api/search?q=refund", None, None)
            .await
            .0,
        401
    );

    // The index lives on the partitioned table: every month partition has it, including
    // ones made later.
    app.sql_exec("SELECT kefu_ensure_partitions(30)").await;
    let partitions = app
        .sql_i64("SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass")
        .await;
    let indexed = app
        .sql_i64(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid \
             WHERE i.inhparent = 'messages'::regclass \
               AND pg_get_indexdef(x.indexrelid) LIKE '%kefu_search_vector%'",
        )
        .await;
    assert!(partitions > 30, "{partitions}");
    assert_eq!(indexed, partitions);
    app.cleanup().await;
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
