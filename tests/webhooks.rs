//! Webhooks: admin CRUD, deliveries to a local receiver signed with HMAC-SHA256, retried
//! after a failure, the delivery log, and a worker restart that loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: BTreeMap<String, String>,
    body: String,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1:0: answers 500 to the first `fail_first` requests and
/// while `down` is set, 200 otherwise; records everything.
#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, f, d) = (hits.clone(), fail.clone(), down.clone());
        let server = HttpServer::new(move || {
            let (h, f, d) = (h.clone(), f.clone(), d.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (h, f, d) = (h.clone(), f.clone(), d.clone());
                async move {
                    let failing = d.load(Ordering::SeqCst)
                        || f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    let answered = if failing { 500 } else { 200 };
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    h.lock().unwrap().push(Hit {
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        answered,
                    });
                    if failing {
                        HttpResponse::InternalServerError().body("not now")
                    } else {
                        HttpResponse::Ok().body("thanks")
                    }
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        Receiver {
            url: format!("http://{addr}/hooks/kefu"),
            hits,
            down,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Hits answered 200, by event id.
    fn delivered(&self) -> BTreeMap<i64, Vec<Hit>> {
        let mut out: BTreeMap<i64, Vec<Hit>> = BTreeMap::new();
        for h in self.hits().into_iter().filter(|h| h.answered == 200) {
            out.entry(h.json()["id"].as_i64().unwrap())
                .or_default()
                .push(h);
        }
        out
    }
}

fn quick_worker(s: &mut kefu::Settings) {
    s.worker_poll_ms = 100;
    s.webhook_retry_secs = 0.3;
    s.webhook_timeout_secs = 5;
}

/// Checks the signature headers the way a receiver should.
fn verify(hit: &Hit, secret: &str) {
    let ts: i64 = hit.headers["x-kefu-timestamp"].parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() < 300, "fresh timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", hit.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hit.headers["x-kefu-signature"], expected, "signature");
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(
        hit.headers["x-kefu-event"],
        hit.json()["type"].as_str().unwrap()
    );
    // A forged body does not match.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"wrong secret").unwrap();
    mac.update(format!("{ts}.{}", hit.body).as_bytes());
    assert_ne!(
        hit.headers["x-kefu-signature"],
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[actix_web::test]
async fn deliveries_are_signed_filtered_retried_after_a_500_and_logged() {
    let app = TestApp::spawn_with(quick_worker).await;
    let admin = app.admin_token().await;
    let receiver = Receiver::start(1).await;
    let notes = Receiver::start(0).await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let site_id = id(&site["id"]);
    let key = id(&site["widget_key"]);

    let (s, hook) = app
        .post(
            &format!("/api/sites/{site_id}/webhooks"),
            &admin,
            json!({ "url": receiver.url }),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let secret = id(&hook["secret"]);
    assert!(secret.len() >= 32);
    assert_eq!(
        hook["events"],
        json!([
            "conversation.created",
            "conversation.updated",
            "conversation.resolved",
            "message.created"
        ])
    );
    assert_eq!(hook["include_private"], false);
    // A second one for messages only, notes included.
    let (s, notes_hook) = app
        .post(
            &format!("/api/sites/{site_id}/webhooks"),
            &admin,
            json!({ "url": notes.url, "events": ["message.created"], "include_private": true }),
        )
        .await;
    assert_eq!(s, 201, "{notes_hook}");

    let (mut visitor, _) = app.visitor(&key).await;
    let first = send_and_ack(&mut visitor, "v-1", "Where is my order?").await;
    let conv = id(&first["conversation_id"]);
    let (s, _) = app.reply(&admin, &conv, "a-1", "Checking now", false).await;
    assert_eq!(s, 201);
    let (s, _) = app
        .reply(&admin, &conv, "a-2", "internal: late parcel", true)
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post(
            &format!("/api/conversations/{conv}/resolve"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);

    // conversation.created, two public messages, resolved.
    let delivered = eventually("four deliveries", || async {
        let d = receiver.delivered();
        (d.len() >= 4).then_some(d)
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let delivered_now = receiver.delivered();
    assert_eq!(delivered_now.len(), 4, "{delivered_now:#?}");
    let bodies: Vec<Value> = delivered.values().map(|h| h[0].json()).collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "conversation.created",
            "message.created",
            "message.created",
            "conversation.resolved"
        ]
    );
    assert_eq!(bodies[1]["data"], first);
    assert_eq!(bodies[2]["data"]["body"], "Checking now");
    assert!(
        bodies.iter().all(|b| b["data"]["private"] != true),
        "no private note without opting in"
    );
    assert_eq!(bodies[3]["data"]["status"], "resolved");
    for b in &bodies {
        assert_eq!(b["site_id"], site_id.as_str());
        assert_eq!(b["conversation_id"], conv.as_str());
    }
    for hits in delivered.values() {
        assert_eq!(hits.len(), 1, "each event delivered once");
        verify(&hits[0], &secret);
    }

    // The first request got a 500 and was sent again, same body, fresh signature.
    let all = receiver.hits();
    assert_eq!(all[0].answered, 500);
    let retried = all
        .iter()
        .skip(1)
        .find(|h| h.body == all[0].body)
        .expect("the failed delivery was retried");
    assert_eq!(retried.answered, 200);
    assert_eq!(
        retried.headers["x-kefu-delivery"],
        all[0].headers["x-kefu-delivery"]
    );

    // The notes webhook got the three messages, the note included, and nothing else.
    let noted = eventually("notes webhook", || async {
        let d = notes.delivered();
        (d.len() >= 3).then_some(d)
    })
    .await;
    let bodies: Vec<Value> = noted.values().map(|h| h[0].json()).collect();
    assert!(bodies.iter().all(|b| b["type"] == "message.created"));
    assert_eq!(bodies[2]["data"]["private"], true);
    assert_eq!(bodies[2]["data"]["body"], "internal: late parcel");
    verify(
        &noted.values().next().unwrap()[0],
        &id(&notes_hook["secret"]),
    );

    // The delivery log shows the retry.
    let (s, log) = app
        .get(
            &format!(
                "/api/sites/{site_id}/webhooks/{}/deliveries",
                id(&hook["id"])
            ),
            &admin,
        )
        .await;
    assert_eq!(s, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|d| d["status"] == "delivered"));
    // Deliveries go out concurrently, so the 500 went to whichever request arrived first:
    // exactly that delivery (same event type as the failed request) took two attempts.
    let failed_type = all[0].json()["type"].clone();
    let retried: Vec<&Value> = items.iter().filter(|d| d["attempts"] == 2).collect();
    assert_eq!(retried.len(), 1, "{log}");
    assert_eq!(retried[0]["event_type"], failed_type);
    assert_eq!(retried[0]["last_status"], 200);
    assert!(items
        .iter()
        .all(|d| d["attempts"] == 1 || d["attempts"] == 2));
    assert_eq!(items.last().unwrap()["event_type"], "conversation.created");
}

#[actix_web::test]
async fn a_receiver_that_keeps_failing_is_given_up_on_after_the_last_attempt() {
    let app = TestApp::spawn_with(|s| {
        quick_worker(s);
        s.webhook_max_attempts = 3;
    })
    .await;
    let admin = app.admin_token().await;
    let receiver = Receiver::start(usize::MAX).await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let site_id = id(&site["id"]);
    let (_, hook) = app
        .post(
            &format!("/api/sites/{site_id}/webhooks"),
            &admin,
            json!({ "url": receiver.url, "events": ["conversation.created"] }),
        )
        .await;
    let (mut visitor, _) = app.visitor(&id(&site["widget_key"])).await;
    send_and_ack(&mut visitor, "v-1", "hello").await;
    let path = format!(
        "/api/sites/{site_id}/webhooks/{}/deliveries",
        id(&hook["id"])
    );
    let item = eventually("the delivery to fail for good", || async {
        let (_, log) = app.get(&path, &admin).await;
        let item = log["items"][0].clone();
        (item["status"] == "failed").then_some(item)
    })
    .await;
    assert_eq!(item["attempts"], 3);
    assert_eq!(item["last_status"], 500);
    assert!(item["last_error"].as_str().unwrap().contains("500"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.hits().len(), 3, "no attempt after giving up");
}

#[actix_web::test]
async fn webhook_crud_checks_its_input_and_is_for_admins() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let base = format!("/api/sites/{}/webhooks", id(&site["id"]));
    for (body, what) in [
        (json!({}), "no url"),
        (json!({ "url": "ftp://example.com" }), "not http"),
        (json!({ "url": "https://" }), "no host"),
        (
            json!({ "url": "https://example.com", "events": [] }),
            "no events",
        ),
        (
            json!({ "url": "https://example.com", "events": ["message.deleted"] }),
            "unknown event",
        ),
        (
            json!({ "url": "https://example.com", "secret": "mine" }),
            "unknown field",
        ),
    ] {
        let (s, b) = app.post(&base, &admin, body).await;
        assert_eq!(s, 400, "{what}: {b}");
        assert_eq!(b["error"]["code"], "bad_request");
    }
    let (s, hook) = app
        .post(
            &base,
            &admin,
            json!({ "url": "https://example.com/h", "events": ["message.created"] }),
        )
        .await;
    assert_eq!(s, 201);
    let one = format!("{base}/{}", id(&hook["id"]));
    let (s, got) = app.get(&one, &admin).await;
    assert_eq!((s, &got), (200, &hook));
    let (s, list) = app.get(&base, &admin).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (s, patched) = app
        .request(
            reqwest::Method::PATCH,
            &one,
            Some(&admin),
            Some(&json!({ "active": false, "rotate_secret": true })),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["active"], false);
    assert_eq!(patched["url"], "https://example.com/h");
    assert_ne!(patched["secret"], hook["secret"], "a new secret");

    let bob = app.create_agent("Bob", 5).await;
    assert_eq!(app.get(&base, &bob.token).await.0, 403);
    assert_eq!(
        app.post(&base, &bob.token, json!({ "url": "https://x.example" }))
            .await
            .0,
        403
    );
    assert_eq!(app.get("/api/sites/nope/webhooks", &admin).await.0, 404);
    assert_eq!(
        app.get(
            &format!("/api/sites/{}/webhooks", uuid::Uuid::new_v4()),
            &admin
        )
        .await
        .0,
        404
    );

    let (s, _) = app
        .request(reqwest::Method::DELETE, &one, Some(&admin), None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(app.get(&one, &admin).await.0, 404);
}

#[actix_web::test]
async fn a_worker_restart_loses_nothing_and_two_workers_deliver_each_event_once() {
    // The node serves without a worker; `kefu worker` processes come and go.
    let app = TestApp::spawn_with(|s| {
        quick_worker(s);
        s.webhook_timeout_secs = 2;
        s.worker = false;
    })
    .await;
    let admin = app.admin_token().await;
    let receiver = Receiver::start(0).await;
    receiver.down.store(true, Ordering::SeqCst);
    let site = app.create_site_with(json!({ "name": "Shop" })).await;
    let site_id = id(&site["id"]);
    let key = id(&site["widget_key"]);
    app.post(
        &format!("/api/sites/{site_id}/webhooks"),
        &admin,
        json!({ "url": receiver.url, "events": ["message.created"] }),
    )
    .await;

    let mut worker_settings = app.settings.clone();
    worker_settings.worker = true;
    let (mut visitor, _) = app.visitor(&key).await;
    for i in 0..5 {
        send_and_ack(&mut visitor, &format!("a-{i}"), &format!("before {i}")).await;
    }
    // A worker starts, finds the receiver failing, and dies.
    let w1 = kefu::worker::WorkerProcess::start(worker_settings.clone())
        .await
        .unwrap();
    eventually("a first attempt", || async {
        (!receiver.hits().is_empty()).then_some(())
    })
    .await;
    w1.stop(Duration::from_secs(1)).await;
    // Meanwhile more messages, with no worker at all.
    for i in 0..5 {
        send_and_ack(&mut visitor, &format!("b-{i}"), &format!("after {i}")).await;
    }
    receiver.down.store(false, Ordering::SeqCst);
    // Two workers now share the work.
    let w2 = kefu::worker::WorkerProcess::start(worker_settings.clone())
        .await
        .unwrap();
    let w3 = kefu::worker::WorkerProcess::start(worker_settings)
        .await
        .unwrap();
    // The dead worker's claims are held for the webhook timeout plus 5 s, then retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let delivered = loop {
        let d = receiver.delivered();
        if d.len() >= 10 {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 10 delivered",
            d.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bodies: BTreeSet<String> = delivered
        .values()
        .map(|h| h[0].json()["data"]["body"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("before {i}"))
        .chain((0..5).map(|i| format!("after {i}")))
        .collect();
    assert_eq!(bodies, expected);
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 10);
    assert!(
        delivered.values().all(|h| h.len() == 1),
        "no event delivered twice: {:?}",
        delivered.values().map(|h| h.len()).collect::<Vec<_>>()
    );
    w2.stop(Duration::from_secs(1)).await;
    w3.stop(Duration::from_secs(1)).await;
}
