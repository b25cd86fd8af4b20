//! Shared test infrastructure: a real kefu node per test, on its own PostgreSQL database and
//! its own Redis key prefix, spoken to with a real HTTP client and a real WebSocket client.
//!
//! - [`TestApp::spawn`] creates `kefu_t_<uuid>`, starts a node on `127.0.0.1:0` (migrations
//!   run at start, the first admin is created from the settings) and drops the database
//!   again when the `TestApp` is dropped — also when the test panics.
//! - [`WsClient`] wraps tokio-tungstenite with the reads a test needs: the next JSON frame,
//!   the next frame of a type, "no frame of this type for a while", and the close code.
//!
//! Environment: `DATABASE_URL` (a database the tests may `CREATE DATABASE` from, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `REDIS_URL` (default
//! `redis://127.0.0.1:6379`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod private_pg;
pub mod private_redis;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::{SinkExt, StreamExt};
use kefu::{RunningServer, Settings};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@kefu.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const AGENT_PASSWORD: &str = "agent-password-1";

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not happen.
pub const QUIET: Duration = Duration::from_millis(400);

fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

/// `base` with its database name replaced by `db`.
fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

#[derive(QueryableByName)]
struct JsonText {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

/// One kefu node on a database of its own.
pub struct TestApp {
    server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub settings: Settings,
    pub db_name: String,
    pub database_url: String,
    pub http: reqwest::Client,
    admin_token: tokio::sync::OnceCell<String>,
    cleaned: bool,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a node; `tweak` adjusts the settings (limits, timeouts) before start.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let _ = env_logger::builder().is_test(true).try_init();
        let base = base_database_url();
        let db_name = format!("kefu_t_{}", Uuid::new_v4().simple());
        create_database(&base, &db_name).await;
        let database_url = with_database(&base, &db_name);

        let mut settings = Settings::from_env().expect("settings from the environment");
        settings.bind = "127.0.0.1:0".parse().expect("address");
        settings.database_url = database_url.clone();
        settings.redis_url = Some(redis_url());
        settings.redis_prefix = db_name.clone();
        settings.node_id = Some(format!("test-{}", &db_name[7..15]));
        settings.admin_email = Some(ADMIN_EMAIL.to_string());
        settings.admin_password = Some(ADMIN_PASSWORD.to_string());
        settings.workers = Some(2);
        settings.db_pool_size = 10;
        settings.shutdown_secs = 2;
        // Attachments of this test only (removed with the database).
        settings.attachment_dir = std::env::temp_dir().join(format!("kefu-files-{db_name}"));
        tweak(&mut settings);

        // Whatever happens from here on, the database is dropped with `app`.
        let mut app = TestApp {
            server: None,
            addr: "127.0.0.1:0".parse().expect("address"),
            settings: settings.clone(),
            db_name,
            database_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
            admin_token: tokio::sync::OnceCell::new(),
            cleaned: false,
        };
        let server = kefu::start(settings).await.expect("kefu node starts");
        app.addr = server.addr;
        app.server = Some(server);
        app
    }

    /// Another node of the same deployment: same database, same Redis and prefix, its own
    /// port and node id. The database stays with `self` (dropping the peer only stops it).
    pub async fn spawn_peer(&self) -> TestApp {
        let mut settings = self.settings.clone();
        settings.bind = "127.0.0.1:0".parse().expect("address");
        settings.node_id = Some(format!(
            "peer-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        let server = kefu::start(settings.clone())
            .await
            .expect("peer node starts");
        TestApp {
            addr: server.addr,
            server: Some(server),
            settings,
            db_name: self.db_name.clone(),
            database_url: self.database_url.clone(),
            http: self.http.clone(),
            admin_token: tokio::sync::OnceCell::new(),
            cleaned: true,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Graceful stop (`RunningServer::stop`); the database stays until drop.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    // --- HTTP -----------------------------------------------------------------------------

    /// A JSON request; answers the status and the body (`Value::Null` when empty or not
    /// JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("HTTP request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("HTTP body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::POST, path, Some(token), Some(&body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::PUT, path, Some(token), Some(&body))
            .await
    }

    /// `POST /api/auth/login`: the status and body.
    pub async fn login_raw(&self, email: &str, password: &str) -> (u16, Value) {
        self.request(
            Method::POST,
            "/api/auth/login",
            None,
            Some(&json!({ "email": email, "password": password })),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self.login_raw(email, password).await;
        assert_eq!(status, 200, "login of {email}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// The bootstrap admin's token (logged in once per test).
    pub async fn admin_token(&self) -> String {
        self.admin_token
            .get_or_init(|| self.login(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await
            .clone()
    }

    /// `POST /api/sites`; answers the created site.
    pub async fn create_site_with(&self, body: Value) -> Value {
        let admin = self.admin_token().await;
        let (status, site) = self.post("/api/sites", &admin, body).await;
        assert_eq!(status, 201, "create site: {site}");
        site
    }

    /// A site accepting any origin; answers its widget key.
    pub async fn create_site(&self) -> String {
        let site = self
            .create_site_with(json!({
                "name": "Shop",
                "greeting": "Hi! How can we help?",
                "offline_message": "We are away; leave a message.",
            }))
            .await;
        site["widget_key"].as_str().expect("widget_key").to_string()
    }

    /// `POST /api/agents` then login: the agent object and its token.
    pub async fn create_agent(&self, name: &str, max_open: i32) -> TestAgent {
        let admin = self.admin_token().await;
        let email = format!("{}@kefu.test", name.to_lowercase());
        let (status, agent) = self
            .post(
                "/api/agents",
                &admin,
                json!({
                    "email": email,
                    "name": name,
                    "password": AGENT_PASSWORD,
                    "role": "agent",
                    "max_open": max_open,
                }),
            )
            .await;
        assert_eq!(status, 201, "create agent: {agent}");
        let token = self.login(&email, AGENT_PASSWORD).await;
        TestAgent {
            id: agent["id"].as_str().expect("agent id").to_string(),
            email,
            token,
        }
    }

    /// `PUT /api/me/status`.
    pub async fn set_status(&self, token: &str, status: &str) {
        let (code, body) = self
            .put("/api/me/status", token, json!({ "status": status }))
            .await;
        assert_eq!(code, 200, "set status {status}: {body}");
        assert_eq!(body["status"], status);
    }

    /// An agent that is online (available for assignment).
    pub async fn online_agent(&self, name: &str, max_open: i32) -> TestAgent {
        let a = self.create_agent(name, max_open).await;
        self.set_status(&a.token, "online").await;
        a
    }

    pub async fn conversation(&self, token: &str, id: &str) -> Value {
        let (status, c) = self.get(&format!("/api/conversations/{id}"), token).await;
        assert_eq!(status, 200, "get conversation: {c}");
        c
    }

    /// Every message of a conversation as agents see it (notes included).
    pub async fn history(&self, token: &str, id: &str) -> Vec<Value> {
        let (status, page) = self
            .get(
                &format!("/api/conversations/{id}/messages?after_seq=0&limit=200"),
                token,
            )
            .await;
        assert_eq!(status, 200, "history: {page}");
        page["items"].as_array().expect("items").clone()
    }

    /// `POST /api/conversations/{id}/messages`: status and body.
    pub async fn reply(
        &self,
        token: &str,
        conversation: &str,
        client_msg_id: &str,
        body: &str,
        private: bool,
    ) -> (u16, Value) {
        self.post(
            &format!("/api/conversations/{conversation}/messages"),
            token,
            json!({ "client_msg_id": client_msg_id, "body": body, "private": private }),
        )
        .await
    }

    // --- WebSockets -------------------------------------------------------------------------

    /// A new visitor on `site`: the client and its `session.welcome`.
    pub async fn visitor(&self, site: &str) -> (WsClient, Value) {
        self.visitor_at(&format!("/ws/visitor?site={site}")).await
    }

    /// The visitor behind `token` again (reconnect).
    pub async fn visitor_again(&self, site: &str, token: &str) -> (WsClient, Value) {
        self.visitor_at(&format!("/ws/visitor?site={site}&token={token}"))
            .await
    }

    async fn visitor_at(&self, path: &str) -> (WsClient, Value) {
        let mut ws = WsClient::connect(&self.ws_url(path), None)
            .await
            .expect("visitor handshake");
        let welcome = ws.recv_json().await;
        assert_eq!(welcome["type"], "session.welcome", "first frame: {welcome}");
        // The session joins its room before it reads the next frame: after the pong, live
        // messages of its conversation reach it.
        ws.sync().await;
        (ws, welcome)
    }

    /// An agent WebSocket, registered for live events when this returns.
    pub async fn agent_ws(&self, token: &str) -> WsClient {
        let mut ws = WsClient::connect(&self.ws_url(&format!("/ws/agent?token={token}")), None)
            .await
            .expect("agent handshake");
        ws.sync().await;
        ws
    }

    // --- SQL ------------------------------------------------------------------------------

    /// A connection of the test's own to its database (works after the node stopped).
    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// Runs a statement; answers the affected row count.
    pub async fn sql_exec(&self, sql: &str) -> usize {
        let mut conn = self.db().await;
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of a query as JSON objects.
    pub async fn sql_rows(&self, sql: &str) -> Vec<Value> {
        let mut conn = self.db().await;
        let wrapped = format!("SELECT coalesce(json_agg(t), '[]')::text AS v FROM ({sql}) t");
        let row: JsonText = diesel::sql_query(&wrapped)
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        match serde_json::from_str(&row.v).expect("json rows") {
            Value::Array(rows) => rows,
            other => panic!("not rows: {other}"),
        }
    }

    /// The single number a query answers (`SELECT count(*) AS n …`).
    pub async fn sql_i64(&self, sql: &str) -> i64 {
        let rows = self.sql_rows(sql).await;
        let row = rows
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{sql}: no row"));
        let v = row
            .as_object()
            .and_then(|o| o.values().next())
            .unwrap_or_else(|| panic!("{sql}: no column"));
        v.as_i64()
            .unwrap_or_else(|| panic!("{sql}: {v} is no integer"))
    }

    /// The value of a Prometheus series (`name{labels}` as rendered), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let res = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        let text = res.text().await.expect("metrics body");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Drops the database now (also done on drop).
    pub async fn cleanup(mut self) {
        self.stop_now();
        let (base, db, prefix) = (
            base_database_url(),
            self.db_name.clone(),
            self.db_name.clone(),
        );
        self.cleaned = true;
        let _ = std::fs::remove_dir_all(&self.settings.attachment_dir);
        drop_database(&base, &db).await;
        delete_redis_keys(&prefix).await;
    }

    fn stop_now(&mut self) {
        if let Some(server) = self.server.take() {
            // The command is sent at once; nobody waits for the workers to finish.
            drop(server.handle.stop(false));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_now();
        if self.cleaned {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.settings.attachment_dir);
        let (base, db, prefix) = (
            base_database_url(),
            self.db_name.clone(),
            self.db_name.clone(),
        );
        // Drop may run inside the test's runtime: block on a runtime of our own, elsewhere.
        let worker = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                drop_database(&base, &db).await;
                delete_redis_keys(&prefix).await;
            });
        });
        let _ = worker.join();
    }
}

async fn create_database(base: &str, db: &str) {
    let mut last = String::new();
    for _ in 0..10 {
        match AsyncPgConnection::establish(base).await {
            Ok(mut conn) => {
                match diesel::sql_query(format!("CREATE DATABASE \"{db}\""))
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => return,
                    // Concurrent CREATE DATABASE from other test processes can collide on the
                    // template; try again.
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cannot create test database {db} from {base}: {last}");
}

async fn drop_database(base: &str, db: &str) {
    match AsyncPgConnection::establish(base).await {
        Ok(mut conn) => {
            if let Err(e) =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
            {
                eprintln!("warning: cannot drop test database {db}: {e}");
            }
        }
        Err(e) => eprintln!("warning: cannot drop test database {db}: {e}"),
    }
}

async fn delete_redis_keys(prefix: &str) {
    let work = async {
        let client = redis::Client::open(redis_url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .ok()?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .ok()?;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
}

/// An agent created for a test, logged in.
#[derive(Debug, Clone)]
pub struct TestAgent {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// Polls `check` until it answers `Some`, or panics after [`WAIT`] with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a read saw.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    /// The server closed the connection (close frame, or the stream ended: `None`).
    Closed(Option<u16>),
    Timeout,
}

/// A WebSocket client speaking kefu's JSON frames.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close frame the server sent, once it did.
    pub close: Option<CloseFrame>,
    pub closed: bool,
    /// Ping frames received from the server (tungstenite answers them by itself).
    pub pings: usize,
    /// Non-JSON text frames (never expected).
    pub garbage: Vec<String>,
    /// Frames read early (by `sync`), handed out first.
    backlog: std::collections::VecDeque<Value>,
    /// Every JSON frame received so far, in order (also the ones a `recv_until` skipped).
    pub transcript: Vec<Value>,
}

/// The rejected handshake: HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl WsClient {
    /// Opens a WebSocket; `origin` sets the `Origin` header.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<WsClient, Refused> {
        let mut req = url.into_client_request().expect("ws request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("Origin", HeaderValue::from_str(o).expect("origin header"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(WsClient::from_stream(stream)),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body = res
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused { status, body })
            }
            Err(e) => panic!("WebSocket connect to {url}: {e}"),
        }
    }

    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        WsClient {
            stream,
            close: None,
            closed: false,
            pings: 0,
            garbage: Vec::new(),
            backlog: Default::default(),
            transcript: Vec::new(),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send(Message::text(v.to_string())).await;
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Message::text(text.into())).await;
    }

    pub async fn send(&mut self, msg: Message) {
        self.stream.send(msg).await.expect("WebSocket send");
    }

    /// The next event within `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Received {
        if let Some(v) = self.backlog.pop_front() {
            return Received::Json(v);
        }
        if self.closed {
            return Received::Closed(self.close.as_ref().map(|c| u16::from(c.code)));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Received::Timeout,
                Ok(n) => n,
            };
            match next {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => {
                        self.transcript.push(v.clone());
                        return Received::Json(v);
                    }
                    Err(_) => self.garbage.push(t.as_str().to_string()),
                },
                Some(Ok(Message::Ping(_))) => self.pings += 1,
                Some(Ok(Message::Close(frame))) => {
                    self.closed = true;
                    self.close = frame;
                    return Received::Closed(self.close.as_ref().map(|c| u16::from(c.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    self.closed = true;
                    return Received::Closed(self.close.as_ref().map(|c| u16::from(c.code)));
                }
            }
        }
    }

    /// The next JSON frame; panics on timeout or close.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Received::Json(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame of type `ty`, skipping others; panics on timeout or close.
    pub async fn recv_until(&mut self, ty: &str) -> Value {
        self.recv_until_where(ty, |_| true).await
    }

    /// The next frame of type `ty` for which `pred` holds, skipping others.
    pub async fn recv_until_where(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Received::Json(v) if v["type"] == ty && pred(&v) => return v,
                Received::Json(v) => skipped.push(v),
                other => panic!("waiting for {ty}: got {other:?}; skipped {skipped:?}"),
            }
        }
    }

    /// A frame of type `ty` matching `pred` that was already received (perhaps skipped by an
    /// earlier `recv_until`), else the next one.
    pub async fn seen_or_recv(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.transcript.iter().find(|v| v["type"] == ty && pred(v)) {
            return v.clone();
        }
        self.recv_until_where(ty, pred).await
    }

    /// Reads for `within`; panics when a frame of type `ty` arrives. Answers the frames of
    /// other types seen meanwhile.
    pub async fn expect_no_frame_of_type(&mut self, ty: &str, within: Duration) -> Vec<Value> {
        self.expect_none(within, |v| v["type"] == ty, ty).await
    }

    /// Reads for `within`; panics when a frame matching `bad` arrives.
    pub async fn expect_none(
        &mut self,
        within: Duration,
        bad: impl Fn(&Value) -> bool,
        what: &str,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return seen;
            }
            match self.recv_within(left).await {
                Received::Json(v) if bad(&v) => panic!("unexpected {what}: {v}"),
                Received::Json(v) => seen.push(v),
                Received::Timeout | Received::Closed(_) => return seen,
            }
        }
    }

    /// `ping` → `pong`: every frame sent before has been handled by the session. Frames
    /// that arrive before the pong stay queued for the next reads.
    pub async fn sync(&mut self) {
        self.send_json(json!({ "type": "ping" })).await;
        let mut early = Vec::new();
        loop {
            match self.recv_within(WAIT).await {
                Received::Json(v) if v["type"] == "pong" => break,
                Received::Json(v) => early.push(v),
                other => panic!("waiting for pong: got {other:?}"),
            }
        }
        self.backlog.extend(early);
    }

    /// Waits for the server to close the connection; answers the close code.
    pub async fn expect_close(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Received::Closed(code) => return code,
                Received::Json(_) => {}
                Received::Timeout => panic!("the server did not close the connection"),
            }
        }
    }

    /// True while the connection answers a ping.
    pub async fn is_open(&mut self) -> bool {
        if self.closed {
            return false;
        }
        if self
            .stream
            .send(Message::text(json!({"type": "ping"}).to_string()))
            .await
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Received::Json(v) if v["type"] == "pong" => return true,
                Received::Json(_) => {}
                _ => return false,
            }
        }
    }
}

// --- conversation helpers ----------------------------------------------------------------

/// Sends `message.send` and waits for its ack; answers the acked message.
pub async fn send_and_ack(ws: &mut WsClient, client_msg_id: &str, body: &str) -> Value {
    ws.send_json(json!({ "type": "message.send", "client_msg_id": client_msg_id, "body": body }))
        .await;
    let ack = ws
        .recv_until_where("message.ack", |v| v["client_msg_id"] == client_msg_id)
        .await;
    ack["message"].clone()
}

/// An agent's `message.send` over its WebSocket; answers the acked message.
pub async fn agent_send_and_ack(
    ws: &mut WsClient,
    conversation: &str,
    client_msg_id: &str,
    body: &str,
    private: bool,
) -> Value {
    ws.send_json(json!({
        "type": "message.send",
        "conversation_id": conversation,
        "client_msg_id": client_msg_id,
        "body": body,
        "private": private,
    }))
    .await;
    let ack = ws
        .recv_until_where("message.ack", |v| v["client_msg_id"] == client_msg_id)
        .await;
    ack["message"].clone()
}

/// The next `message.created` whose message has `body`.
pub async fn recv_message(ws: &mut WsClient, body: &str) -> Value {
    let f = ws
        .recv_until_where("message.created", |v| v["message"]["body"] == body)
        .await;
    f["message"].clone()
}

/// A string id out of a JSON value.
pub fn id(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string id"))
        .to_string()
}
