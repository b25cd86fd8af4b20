//! `loadgen`: the WebSocket load generator for kefu (and for `baseline ws`).
//!
//! Opens `--visitors` visitor sockets and `--agents` agent sockets against one or more
//! nodes (`--url`, repeatable; connections go round-robin over them), each bound to one of
//! `--sources` loopback source addresses (127.0.0.1, 127.0.0.2, …) so that neither the
//! ephemeral port range nor kefu's per-IP connection limit caps the count. Agents are
//! created and logged in through the HTTP API with `--admin-email/--admin-password` (or
//! given as `--agent-token`), and set `online`.
//!
//! After the connections are up (and, when anything is to be sent, a warm-up message from
//! each visitor that opens its conversation), the run goes through one phase per entry of
//! `--rates` (messages per second per visitor; `0` holds the sockets idle), each
//! `--duration` seconds. Every message carries its send time in its `client_msg_id`
//! (`<tag>.<phase>.<visitor>.<n>.<unix µs>`), so latencies are measured from the id:
//!
//! - send → `message.ack` on the visitor's socket;
//! - send → the first `message.created` on any agent socket of this process (agents see
//!   every conversation, so one agent on one node suffices; with several nodes the
//!   message crosses Redis on the way);
//! - connect time: TCP connect + WebSocket handshake + the server's welcome frame.
//!
//! Latencies are recorded in HDR histograms (µs, 3 significant digits). The result is
//! printed (msg/s, p50/p99/p99.9/max, errors) and written as JSON with `--json FILE`.
//!
//! One process holds ~20,000 sockets here (`ulimit -n`): `--procs N` splits the visitors
//! over N child processes of this binary, which connect, report ready, start their
//! phases at one common instant, and hand back their histograms to be merged.
//!
//! Visitors respect kefu's send limit (5/s, bursts of 20): for high rates use many
//! visitors, not fast ones (`--rates` above 5 is refused).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const AGENT_PASSWORD: &str = "loadgen-agent-password";
/// Histogram range: 1 µs … 10 min.
const HIST_MAX_US: u64 = 600_000_000;

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "WebSocket load generator for kefu")]
struct Args {
    /// Base URL of a node; repeat for several nodes (connections are spread round-robin).
    #[arg(long = "url", default_value = "http://127.0.0.1:6006")]
    urls: Vec<String>,
    /// Widget key of the site the visitors use (created with the admin login when absent).
    #[arg(long)]
    site: Option<String>,
    /// Admin login used to create the site and the agents.
    #[arg(long, env = "KEFU_ADMIN_EMAIL")]
    admin_email: Option<String>,
    #[arg(long, env = "KEFU_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Agent sockets per process.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Use these agent tokens instead of creating agents (repeat; baseline: any string).
    #[arg(long = "agent-token")]
    agent_tokens: Vec<String>,
    /// `max_open` of the agents the generator creates.
    #[arg(long, default_value_t = 5)]
    agent_max_open: i32,
    /// Visitor sockets in total (split over `--procs`).
    #[arg(long, default_value_t = 100)]
    visitors: usize,
    /// Messages per second per visitor, one phase per value ("1,2,3"); 0 = idle.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    rates: Vec<f64>,
    /// Only this many visitors send (split over `--procs`); the others hold idle sockets.
    #[arg(long)]
    senders: Option<usize>,
    /// Step test: skip the remaining phases once a phase's send→agent p99 exceeds this
    /// (or under 95% of its messages reached an agent by its end). Per process.
    #[arg(long)]
    stop_above_ms: Option<f64>,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds over which the connections are opened.
    #[arg(long, default_value_t = 5.0)]
    ramp_up: f64,
    /// Seconds over which each visitor sends its unmeasured first message (which opens
    /// its conversation); 0 skips it.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds to wait after the last phase for outstanding acks and deliveries.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Seconds to wait after every socket is up before the phases (and the RSS reading).
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Source addresses 127.0.0.1 … 127.0.0.N used round-robin.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connection attempts in flight at once (per process).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// tungstenite read buffer per socket, bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Message body.
    #[arg(long, default_value = "Hello, I have a question about my order.")]
    body: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tag in every client_msg_id (default: random).
    #[arg(long)]
    tag: Option<String>,
    /// Read VmRSS of these processes before connecting and once connected (repeat).
    #[arg(long = "rss-pid")]
    rss_pids: Vec<u32>,
    /// Split into this many processes (each should hold < 20,000 sockets).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Exit 1 when any error happened or a phase with a rate delivered nothing.
    #[arg(long)]
    fail_on_error: bool,
    /// Internal: run as a child of `--procs`.
    #[arg(long, hide = true)]
    child: bool,
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("histogram bounds")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
struct PhaseStats {
    rate: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    ack: Histogram<u64>,
    agent: Histogram<u64>,
}

impl PhaseStats {
    fn new(rate: f64) -> PhaseStats {
        PhaseStats {
            rate,
            sent: 0,
            acked: 0,
            delivered: 0,
            ack: new_hist(),
            agent: new_hist(),
        }
    }
}

struct Stats {
    phases: Vec<PhaseStats>,
    warmup: PhaseStats,
    connect: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn phase(&mut self, idx: Option<usize>) -> Option<&mut PhaseStats> {
        match idx {
            None => Some(&mut self.warmup),
            Some(i) => self.phases.get_mut(i),
        }
    }
    fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }
}

/// What tasks share.
struct Shared {
    tag: String,
    body: String,
    stats: Mutex<Stats>,
    /// Messages not yet seen by an agent: visitor << 32 | n.
    pending: Mutex<HashSet<u64>>,
    connected_visitors: AtomicUsize,
    connected_agents: AtomicUsize,
    agents_welcomed: AtomicUsize,
    finished: AtomicUsize,
    sent_total: AtomicU64,
}

impl Shared {
    fn error(&self, what: impl Into<String>) {
        if let Ok(mut s) = self.stats.lock() {
            s.error(what);
        }
    }
}

/// Where the run is; broadcast to every task.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Connecting,
    Warmup { until: Instant },
    Phase { idx: usize, rate: f64 },
    Quiet,
    Stop,
}

// ---------------------------------------------------------------------------------------
// Frames: substring reads (a full JSON parse per frame would load the generator more than
// the server). Frames are serde output from kefu, so the fields are where we look.
// ---------------------------------------------------------------------------------------

fn frame_type(text: &str) -> Option<&str> {
    string_field(text, "type")
}

fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("\"{name}\":\"");
    let start = text.find(&pat)? + pat.len();
    let end = text[start..].find('"')? + start;
    Some(&text[start..end])
}

struct MsgId<'a> {
    tag: &'a str,
    /// None: warm-up.
    phase: Option<usize>,
    visitor: u32,
    n: u32,
    sent_us: u64,
}

fn parse_id(id: &str) -> Option<MsgId<'_>> {
    let mut it = id.rsplitn(5, '.');
    let sent_us = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    let visitor = it.next()?.parse().ok()?;
    let phase = match it.next()? {
        "w" => None,
        p => Some(p.parse().ok()?),
    };
    let tag = it.next()?;
    Some(MsgId {
        tag,
        phase,
        visitor,
        n,
        sent_us,
    })
}

fn key(visitor: u32, n: u32) -> u64 {
    (u64::from(visitor) << 32) | u64::from(n)
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Node {
    addr: SocketAddr,
    host: String,
}

async fn resolve(url: &str) -> Result<Node, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("{url}: only http:// and ws:// URLs"))?;
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    let addr = tokio::net::lookup_host(&host)
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("{url}: no IPv4 address"))?;
    Ok(Node { addr, host })
}

fn source(i: usize, sources: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (i % sources.max(1) as usize) as u8,
    ))
}

async fn connect(
    node: &Node,
    src: IpAddr,
    path: &str,
    read_buffer: usize,
) -> Result<WebSocketStream<TcpStream>, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = sock
        .connect(node.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let req = format!("ws://{}{}", node.host, path)
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                format!("handshake: HTTP {}", r.status().as_u16())
            }
            other => format!("handshake: {other}"),
        })?;
    Ok(ws)
}

/// Waits for the first text frame of `kind` (the welcome), bounded.
async fn welcome(ws: &mut WebSocketStream<TcpStream>, kind: &str) -> Result<(), String> {
    let wait = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Text(t)) if frame_type(&t) == Some(kind) => return Ok(()),
                Ok(Message::Close(c)) => return Err(format!("closed before welcome: {c:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("read before welcome: {e}")),
            }
        }
        Err("closed before welcome".to_string())
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| "no welcome within 30 s".to_string())?
}

fn short(err: &str) -> String {
    // Group errors by kind: drop addresses, ports and numbers after the first colon.
    let mut s: String = err.chars().take(80).collect();
    if let Some(i) = s.find(" (os error") {
        s.truncate(i);
    }
    s
}

// ---------------------------------------------------------------------------------------
// Visitors and agents
// ---------------------------------------------------------------------------------------

struct VisitorCtx {
    id: u32,
    node: Node,
    src: IpAddr,
    site: String,
    read_buffer: usize,
    start_at: Instant,
    sends: bool,
}

async fn visitor(
    ctx: VisitorCtx,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    mut stage_rx: watch::Receiver<Stage>,
) {
    tokio::time::sleep_until(ctx.start_at.into()).await;
    let t0 = Instant::now();
    let ws = {
        let _permit = sem.acquire().await;
        let path = format!("/ws/visitor?site={}", ctx.site);
        match connect(&ctx.node, ctx.src, &path, ctx.read_buffer).await {
            Ok(mut ws) => match welcome(&mut ws, "session.welcome").await {
                Ok(()) => Some(ws),
                Err(e) => {
                    shared.error(format!("visitor connect: {}", short(&e)));
                    None
                }
            },
            Err(e) => {
                shared.error(format!("visitor connect: {}", short(&e)));
                None
            }
        }
    };
    let Some(mut ws) = ws else {
        shared.finished.fetch_add(1, Ordering::AcqRel);
        return;
    };
    if let Ok(mut s) = shared.stats.lock() {
        s.connect
            .saturating_record(t0.elapsed().as_micros().max(1) as u64);
    }
    shared.connected_visitors.fetch_add(1, Ordering::AcqRel);

    let mut n: u32 = 0;
    let mut next_send: Option<Instant> = None;
    let mut period = Duration::ZERO;
    let mut phase: Option<usize> = None;
    let mut warmed = false;
    let mut stage = *stage_rx.borrow_and_update();
    let mut stage_changed = true;
    loop {
        if stage_changed {
            stage_changed = false;
            match stage {
                Stage::Connecting | Stage::Quiet => next_send = None,
                Stage::Stop => break,
                Stage::Warmup { .. } | Stage::Phase { .. } if !ctx.sends => next_send = None,
                Stage::Warmup { until } => {
                    if !warmed {
                        warmed = true;
                        let left = until.saturating_duration_since(Instant::now());
                        let off = left.mul_f64(rand::random::<f64>());
                        next_send = Some(Instant::now() + off);
                        phase = None;
                    }
                }
                Stage::Phase { idx, rate } => {
                    phase = Some(idx);
                    if rate > 0.0 {
                        period = Duration::from_secs_f64(1.0 / rate);
                        next_send = Some(Instant::now() + period.mul_f64(rand::random::<f64>()));
                    } else {
                        next_send = None;
                    }
                }
            }
        }
        let sleep_to = next_send.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            changed = stage_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                stage = *stage_rx.borrow_and_update();
                stage_changed = true;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => on_visitor_frame(&t, &shared),
                Some(Ok(Message::Close(c))) => {
                    shared.error(format!("visitor closed by server: {}",
                        c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.error(format!("visitor read: {}", short(&e.to_string())));
                    break;
                }
                None => {
                    shared.error("visitor socket ended");
                    break;
                }
            },
            _ = tokio::time::sleep_until(sleep_to.into()), if next_send.is_some() => {
                n += 1;
                let sent = now_us();
                let ph = match phase { Some(i) => i.to_string(), None => "w".to_string() };
                let id = format!("{}.{}.{}.{}.{}", shared.tag, ph, ctx.id, n, sent);
                let frame = json!({"type": "message.send", "client_msg_id": id, "body": shared.body}).to_string();
                if let Ok(mut p) = shared.pending.lock() {
                    p.insert(key(ctx.id, n));
                }
                if let Ok(mut s) = shared.stats.lock() {
                    if let Some(ps) = s.phase(phase) { ps.sent += 1; }
                }
                shared.sent_total.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ws.send(Message::text(frame)).await {
                    shared.error(format!("visitor send: {}", short(&e.to_string())));
                    break;
                }
                next_send = match (phase, next_send) {
                    (None, _) => None, // one warm-up message
                    (Some(_), Some(at)) => {
                        // Open loop: keep the schedule; a late tick is not made up twice.
                        let next = at + period;
                        Some(if next + period < Instant::now() { Instant::now() + period } else { next })
                    }
                    (Some(_), None) => None,
                };
            }
        }
    }
    let _ = ws.close(None).await;
    shared.finished.fetch_add(1, Ordering::AcqRel);
}

fn on_visitor_frame(text: &str, shared: &Shared) {
    match frame_type(text) {
        Some("message.ack") => {
            let now = now_us();
            let Some(id) = string_field(text, "client_msg_id").and_then(parse_id) else {
                return;
            };
            if let Ok(mut s) = shared.stats.lock() {
                if let Some(ps) = s.phase(id.phase) {
                    ps.acked += 1;
                    ps.ack
                        .saturating_record(now.saturating_sub(id.sent_us).max(1));
                }
            }
        }
        Some("error") => {
            let code = string_field(text, "code").unwrap_or("?");
            shared.error(format!("error frame: {code}"));
        }
        _ => {}
    }
}

struct AgentCtx {
    node: Node,
    src: IpAddr,
    token: String,
    read_buffer: usize,
}

async fn agent(ctx: AgentCtx, shared: Arc<Shared>, mut stage_rx: watch::Receiver<Stage>) {
    let t0 = Instant::now();
    let path = format!("/ws/agent?token={}", ctx.token);
    let mut ws = match connect(&ctx.node, ctx.src, &path, ctx.read_buffer.max(64 * 1024)).await {
        Ok(ws) => ws,
        Err(e) => {
            shared.error(format!("agent connect: {}", short(&e)));
            shared.agents_welcomed.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    // kefu sends agents nothing on connect (the baseline sends `agent.welcome`, which is
    // ignored below): a completed upgrade is a connected agent.
    if let Ok(mut s) = shared.stats.lock() {
        s.connect
            .saturating_record(t0.elapsed().as_micros().max(1) as u64);
    }
    shared.connected_agents.fetch_add(1, Ordering::AcqRel);
    shared.agents_welcomed.fetch_add(1, Ordering::AcqRel);
    loop {
        tokio::select! {
            changed = stage_rx.changed() => {
                if changed.is_err() || *stage_rx.borrow_and_update() == Stage::Stop {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => on_agent_frame(&t, &shared),
                Some(Ok(Message::Close(c))) => {
                    shared.error(format!("agent closed by server: {}",
                        c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    shared.error(format!("agent read: {}", short(&e.to_string())));
                    break;
                }
                None => {
                    shared.error("agent socket ended");
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

fn on_agent_frame(text: &str, shared: &Shared) {
    if frame_type(text) != Some("message.created") {
        return;
    }
    let now = now_us();
    let Some(id) = string_field(text, "client_msg_id").and_then(parse_id) else {
        return;
    };
    if id.tag != shared.tag {
        return; // another process's visitor
    }
    let first = shared
        .pending
        .lock()
        .map(|mut p| p.remove(&key(id.visitor, id.n)))
        .unwrap_or(false);
    if !first {
        return; // another agent saw it first
    }
    if let Ok(mut s) = shared.stats.lock() {
        if let Some(ps) = s.phase(id.phase) {
            ps.delivered += 1;
            ps.agent
                .saturating_record(now.saturating_sub(id.sent_us).max(1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Setup through the HTTP API
// ---------------------------------------------------------------------------------------

async fn http_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = client.request(method.clone(), &url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = res.status();
    let text = res
        .text()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{method} {url}: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{method} {url}: {e}: {text}"))
}

/// The site key and `count` agent tokens (agents created, logged in and set online).
async fn setup(args: &Args, tag: &str, count: usize) -> Result<(String, Vec<String>), String> {
    let need_admin = args.site.is_none() || (args.agent_tokens.is_empty() && count > 0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = args.urls[0].trim_end_matches('/').to_string();
    let admin = if need_admin {
        let (Some(email), Some(password)) = (&args.admin_email, &args.admin_password) else {
            return Err(
                "need --site and --agent-token, or --admin-email/--admin-password to create them"
                    .into(),
            );
        };
        let v = http_json(
            &client,
            reqwest::Method::POST,
            format!("{base}/api/auth/login"),
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await?;
        Some(
            v["token"]
                .as_str()
                .ok_or("login answered without a token")?
                .to_string(),
        )
    } else {
        None
    };
    let site = match &args.site {
        Some(s) => s.clone(),
        None => {
            let v = http_json(
                &client,
                reqwest::Method::POST,
                format!("{base}/api/sites"),
                admin.as_deref(),
                Some(json!({"name": format!("loadgen {tag}")})),
            )
            .await?;
            v["widget_key"]
                .as_str()
                .ok_or("site answered without widget_key")?
                .to_string()
        }
    };
    let mut tokens = args.agent_tokens.clone();
    if tokens.is_empty() {
        for i in 0..count {
            let email = format!("lg-{tag}-{i}@loadgen.kefu.test");
            let node = args.urls[i % args.urls.len()].trim_end_matches('/');
            http_json(
                &client,
                reqwest::Method::POST,
                format!("{base}/api/agents"),
                admin.as_deref(),
                Some(json!({"email": email, "name": format!("Loadgen {i}"),
                    "password": AGENT_PASSWORD, "role": "agent", "max_open": args.agent_max_open})),
            )
            .await?;
            let v = http_json(
                &client,
                reqwest::Method::POST,
                format!("{node}/api/auth/login"),
                None,
                Some(json!({"email": email, "password": AGENT_PASSWORD})),
            )
            .await?;
            let token = v["token"]
                .as_str()
                .ok_or("login answered without a token")?
                .to_string();
            http_json(
                &client,
                reqwest::Method::PUT,
                format!("{node}/api/me/status"),
                Some(&token),
                Some(json!({"status": "online"})),
            )
            .await?;
            tokens.push(token);
        }
    }
    Ok((site, tokens))
}

// ---------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Latency {
    count: u64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// HDR V2 serialisation, hex (for merging reports of several processes).
    hist: String,
}

fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |v: u64| v as f64 / 1000.0;
    let mut buf = Vec::new();
    let _ = V2Serializer::new().serialize(h, &mut buf);
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(p))
        }
    };
    Latency {
        count: h.len(),
        mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        hist: hex::encode(buf),
    }
}

fn hist_of(l: &Latency) -> Histogram<u64> {
    hex::decode(&l.hist)
        .ok()
        .and_then(|b| Deserializer::new().deserialize(&mut &b[..]).ok())
        .unwrap_or_else(new_hist)
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct PhaseReport {
    rate_per_visitor: f64,
    duration_s: f64,
    offered_msgs_per_s: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    acked_msgs_per_s: f64,
    delivered_msgs_per_s: f64,
    send_to_agent: Latency,
    send_to_ack: Latency,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Rss {
    pid: u32,
    before_kib: u64,
    after_kib: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Report {
    tag: String,
    urls: Vec<String>,
    procs: usize,
    visitors: usize,
    agents: usize,
    visitors_connected: usize,
    agents_connected: usize,
    connect_seconds: f64,
    connect: Latency,
    warmup: PhaseReport,
    phases: Vec<PhaseReport>,
    errors: BTreeMap<String, u64>,
    errors_total: u64,
    /// Messages sent (measured phases) never seen by an agent of this run.
    undelivered: u64,
    /// Messages sent (measured phases) never acknowledged.
    unacked: u64,
    rss: Vec<Rss>,
    /// (Σ after − Σ before) / connections, KiB; present when --rss-pid was given.
    rss_per_connection_kib: Option<f64>,
}

fn phase_report(p: &PhaseStats, duration: f64) -> PhaseReport {
    let d = duration.max(1e-9);
    PhaseReport {
        rate_per_visitor: p.rate,
        duration_s: duration,
        offered_msgs_per_s: p.sent as f64 / d,
        sent: p.sent,
        acked: p.acked,
        delivered: p.delivered,
        acked_msgs_per_s: p.acked as f64 / d,
        delivered_msgs_per_s: p.delivered as f64 / d,
        send_to_agent: latency(&p.agent),
        send_to_ack: latency(&p.ack),
    }
}

fn merge_latency(a: &Latency, b: &Latency) -> Latency {
    let mut h = hist_of(a);
    let _ = h.add(hist_of(b));
    latency(&h)
}

fn merge_phase(a: &PhaseReport, b: &PhaseReport) -> PhaseReport {
    let d = a.duration_s.max(b.duration_s).max(1e-9);
    let sent = a.sent + b.sent;
    let acked = a.acked + b.acked;
    let delivered = a.delivered + b.delivered;
    PhaseReport {
        rate_per_visitor: a.rate_per_visitor,
        duration_s: d,
        offered_msgs_per_s: sent as f64 / d,
        sent,
        acked,
        delivered,
        acked_msgs_per_s: acked as f64 / d,
        delivered_msgs_per_s: delivered as f64 / d,
        send_to_agent: merge_latency(&a.send_to_agent, &b.send_to_agent),
        send_to_ack: merge_latency(&a.send_to_ack, &b.send_to_ack),
    }
}

fn merge(mut total: Report, r: &Report) -> Report {
    total.visitors += r.visitors;
    total.agents += r.agents;
    total.visitors_connected += r.visitors_connected;
    total.agents_connected += r.agents_connected;
    total.connect_seconds = total.connect_seconds.max(r.connect_seconds);
    total.connect = merge_latency(&total.connect, &r.connect);
    total.warmup = merge_phase(&total.warmup, &r.warmup);
    if total.phases.is_empty() {
        total.phases = r.phases.clone();
    } else {
        total.phases = total
            .phases
            .iter()
            .zip(&r.phases)
            .map(|(a, b)| merge_phase(a, b))
            .collect();
    }
    for (k, v) in &r.errors {
        *total.errors.entry(k.clone()).or_default() += v;
    }
    total.errors_total += r.errors_total;
    total.undelivered += r.undelivered;
    total.unacked += r.unacked;
    total
}

fn fmt_lat(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}

fn print_report(r: &Report) {
    println!(
        "loadgen {}: {} visitors + {} agents over {} node(s), {} process(es)",
        r.tag,
        r.visitors,
        r.agents,
        r.urls.len(),
        r.procs
    );
    println!(
        "  connected {}/{} visitors, {}/{} agents in {:.1} s; connect {}",
        r.visitors_connected,
        r.visitors,
        r.agents_connected,
        r.agents,
        r.connect_seconds,
        fmt_lat(&r.connect)
    );
    if r.warmup.sent > 0 {
        println!(
            "  warm-up: {} sent, {} acked, {} seen by an agent; send→ack {}",
            r.warmup.sent,
            r.warmup.acked,
            r.warmup.delivered,
            fmt_lat(&r.warmup.send_to_ack)
        );
    }
    for (i, p) in r.phases.iter().enumerate() {
        println!(
            "  phase {} ({} msg/s per visitor, {:.0} s): offered {:.0} msg/s, acked {:.0} msg/s ({}/{}), to agent {:.0} msg/s ({})",
            i + 1,
            p.rate_per_visitor,
            p.duration_s,
            p.offered_msgs_per_s,
            p.acked_msgs_per_s,
            p.acked,
            p.sent,
            p.delivered_msgs_per_s,
            p.delivered
        );
        if p.sent > 0 {
            println!("    send→agent {}", fmt_lat(&p.send_to_agent));
            println!("    send→ack   {}", fmt_lat(&p.send_to_ack));
        }
    }
    for rss in &r.rss {
        println!(
            "  pid {} VmRSS {} KiB → {} KiB (+{} KiB)",
            rss.pid,
            rss.before_kib,
            rss.after_kib,
            rss.after_kib as i64 - rss.before_kib as i64
        );
    }
    if let Some(k) = r.rss_per_connection_kib {
        println!("  server memory per connection: {k:.2} KiB");
    }
    println!(
        "  errors: {}; unacked {}; undelivered {}",
        r.errors_total, r.unacked, r.undelivered
    );
    for (k, v) in &r.errors {
        println!("    {v:>8}  {k}");
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// One process's run
// ---------------------------------------------------------------------------------------

/// How a worker learns when to start its phases: at once (single process) or from the
/// parent (children print READY and wait for "GO <unix ms>").
enum Go {
    /// Single process: wait `settle` seconds, read the RSS of these pids, go.
    Local {
        settle: f64,
        rss_before: Vec<(u32, u64)>,
    },
    Parent,
}

async fn run_worker(
    args: &Args,
    tag: String,
    site: String,
    tokens: Vec<String>,
    go: Go,
) -> Result<Report, String> {
    let mut nodes = Vec::new();
    for u in &args.urls {
        nodes.push(resolve(u).await?);
    }
    let shared = Arc::new(Shared {
        tag: tag.clone(),
        body: args.body.clone(),
        stats: Mutex::new(Stats {
            phases: args.rates.iter().map(|r| PhaseStats::new(*r)).collect(),
            warmup: PhaseStats::new(0.0),
            connect: new_hist(),
            errors: BTreeMap::new(),
        }),
        pending: Mutex::new(HashSet::new()),
        connected_visitors: AtomicUsize::new(0),
        connected_agents: AtomicUsize::new(0),
        agents_welcomed: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        sent_total: AtomicU64::new(0),
    });
    let (stage_tx, stage_rx) = watch::channel(Stage::Connecting);
    let started = Instant::now();

    // Agents first, so the first messages have somebody to reach.
    let mut agent_tasks = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let ctx = AgentCtx {
            node: nodes[i % nodes.len()].clone(),
            src: source(i, args.sources),
            token: token.clone(),
            read_buffer: args.read_buffer,
        };
        agent_tasks.push(tokio::spawn(agent(ctx, shared.clone(), stage_rx.clone())));
    }
    while shared.agents_welcomed.load(Ordering::Acquire) < tokens.len()
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let ramp = Duration::from_secs_f64(args.ramp_up.max(0.0));
    let t0 = Instant::now();
    let mut visitor_tasks = Vec::with_capacity(args.visitors);
    for i in 0..args.visitors {
        let at = if args.visitors > 1 {
            t0 + ramp.mul_f64(i as f64 / args.visitors as f64)
        } else {
            t0
        };
        let ctx = VisitorCtx {
            id: i as u32,
            node: nodes[i % nodes.len()].clone(),
            src: source(i + tokens.len(), args.sources),
            site: site.clone(),
            read_buffer: args.read_buffer,
            start_at: at,
            sends: args.senders.is_none_or(|n| i < n),
        };
        visitor_tasks.push(tokio::spawn(visitor(
            ctx,
            shared.clone(),
            sem.clone(),
            stage_rx.clone(),
        )));
    }
    // Until every visitor is connected or has failed.
    let mut last_print = Instant::now();
    loop {
        let up = shared.connected_visitors.load(Ordering::Acquire);
        let done = up + shared.finished.load(Ordering::Acquire);
        if done >= args.visitors {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "loadgen {tag}: {up}/{} visitors connected ({:.0} s)",
                args.visitors,
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "loadgen {tag}: {}/{} visitors, {}/{} agents connected in {connect_seconds:.1} s",
        shared.connected_visitors.load(Ordering::Acquire),
        args.visitors,
        shared.connected_agents.load(Ordering::Acquire),
        tokens.len(),
    );

    let mut rss = Vec::new();
    match go {
        Go::Local { settle, rss_before } => {
            tokio::time::sleep(Duration::from_secs_f64(settle)).await;
            rss = rss_before
                .iter()
                .map(|(pid, before)| Rss {
                    pid: *pid,
                    before_kib: *before,
                    after_kib: vm_rss_kib(*pid),
                })
                .collect();
        }
        Go::Parent => {
            println!("READY");
            let _ = std::io::stdout().flush();
            let line = tokio::task::spawn_blocking(|| {
                let mut l = String::new();
                let _ = std::io::stdin().read_line(&mut l);
                l
            })
            .await
            .map_err(|e| e.to_string())?;
            let at_ms: u64 = line
                .trim()
                .strip_prefix("GO ")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("expected GO <ms>, got {line:?}"))?;
            let now_ms = now_us() / 1000;
            if at_ms > now_ms {
                tokio::time::sleep(Duration::from_millis(at_ms - now_ms)).await;
            }
        }
    }

    let sending = args.rates.iter().any(|r| *r > 0.0);
    if sending && args.warmup > 0.0 {
        let w = Duration::from_secs_f64(args.warmup);
        let _ = stage_tx.send(Stage::Warmup {
            until: Instant::now() + w,
        });
        tokio::time::sleep(w).await;
        // Let the warm-up answers come back (conversations are being opened).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (sent, acked) = shared
                .stats
                .lock()
                .map(|s| (s.warmup.sent, s.warmup.acked))
                .unwrap_or((0, 0));
            if acked >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stage_tx.send(Stage::Quiet);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut durations = Vec::new();
    for (idx, rate) in args.rates.iter().enumerate() {
        let _ = stage_tx.send(Stage::Phase { idx, rate: *rate });
        let p0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        durations.push(p0.elapsed().as_secs_f64());
        let (p99, sent, delivered) = shared
            .stats
            .lock()
            .map(|s| {
                let p = &s.phases[idx];
                let p99 = if p.agent.is_empty() {
                    0.0
                } else {
                    p.agent.value_at_quantile(0.99) as f64 / 1000.0
                };
                (p99, p.sent, p.delivered)
            })
            .unwrap_or((0.0, 0, 0));
        eprintln!(
            "loadgen {tag}: phase {} ({} msg/s per visitor) done: {sent} sent, {delivered} reached an agent, p99 so far {p99:.1} ms",
            idx + 1,
            rate
        );
        if let Some(limit) = args.stop_above_ms {
            if p99 > limit || (delivered as f64) < 0.95 * sent as f64 {
                eprintln!("loadgen {tag}: stopping the steps here (--stop-above-ms {limit})");
                break;
            }
        }
    }
    let _ = stage_tx.send(Stage::Quiet);
    if sending {
        // Until every measured message is acked and delivered, or the drain time is up.
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        while Instant::now() < deadline {
            let done = shared
                .stats
                .lock()
                .map(|s| {
                    s.phases
                        .iter()
                        .all(|p| p.acked >= p.sent && p.delivered >= p.sent)
                })
                .unwrap_or(true);
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stage_tx.send(Stage::Stop);
    for t in visitor_tasks.into_iter().chain(agent_tasks) {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    let s = shared.stats.lock().map_err(|_| "stats poisoned")?;
    let phases: Vec<PhaseReport> = s
        .phases
        .iter()
        .zip(&durations)
        .map(|(p, d)| phase_report(p, *d))
        .collect();
    let unacked = s
        .phases
        .iter()
        .map(|p| p.sent.saturating_sub(p.acked))
        .sum();
    let undelivered = s
        .phases
        .iter()
        .map(|p| p.sent.saturating_sub(p.delivered))
        .sum();
    let errors_total = s.errors.values().sum();
    Ok(Report {
        tag,
        urls: args.urls.clone(),
        procs: 1,
        visitors: args.visitors,
        agents: tokens.len(),
        visitors_connected: shared.connected_visitors.load(Ordering::Acquire),
        agents_connected: shared.connected_agents.load(Ordering::Acquire),
        connect_seconds,
        connect: latency(&s.connect),
        warmup: phase_report(&s.warmup, args.warmup),
        phases,
        errors: s.errors.clone(),
        errors_total,
        undelivered,
        unacked,
        rss,
        rss_per_connection_kib: None,
    })
}

// ---------------------------------------------------------------------------------------
// Several processes
// ---------------------------------------------------------------------------------------

fn run_children(
    args: &Args,
    tag: &str,
    site: &str,
    tokens: &[String],
    rss_before: &[(u32, u64)],
) -> Result<(Report, Vec<Rss>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir();
    let per_agent = tokens.len() / args.procs;
    let mut children = Vec::new();
    for i in 0..args.procs {
        let visitors = args.visitors / args.procs + usize::from(i < args.visitors % args.procs);
        let json = dir.join(format!("loadgen-{tag}-{i}.json"));
        let mut cmd = Command::new(&exe);
        cmd.arg("--child")
            .arg("--site")
            .arg(site)
            .arg("--tag")
            .arg(format!("{tag}-{i}"))
            .arg("--visitors")
            .arg(visitors.to_string())
            .arg("--rates")
            .arg(
                args.rates
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .arg("--duration")
            .arg(args.duration.to_string())
            .arg("--ramp-up")
            .arg(args.ramp_up.to_string())
            .arg("--warmup")
            .arg(args.warmup.to_string())
            .arg("--drain")
            .arg(args.drain.to_string())
            .arg("--sources")
            .arg(args.sources.to_string())
            .arg("--connect-concurrency")
            .arg(args.connect_concurrency.to_string())
            .arg("--read-buffer")
            .arg(args.read_buffer.to_string())
            .arg("--body")
            .arg(&args.body)
            .arg("--settle")
            .arg("0")
            .arg("--json")
            .arg(&json);
        // Each child's nodes: all of them, rotated so the children start on different nodes.
        if let Some(n) = args.senders {
            let share = n / args.procs + usize::from(i < n % args.procs);
            cmd.arg("--senders").arg(share.to_string());
        }
        if let Some(ms) = args.stop_above_ms {
            cmd.arg("--stop-above-ms").arg(ms.to_string());
        }
        for k in 0..args.urls.len() {
            cmd.arg("--url").arg(&args.urls[(i + k) % args.urls.len()]);
        }
        for t in &tokens[i * per_agent..(i + 1) * per_agent] {
            cmd.arg("--agent-token").arg(t);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("KEFU_ADMIN_PASSWORD");
        let child = cmd.spawn().map_err(|e| format!("spawn child: {e}"))?;
        children.push((child, json));
    }
    // Wait for READY from each.
    let mut readers = Vec::new();
    for (child, _) in children.iter_mut() {
        let out = child.stdout.take().ok_or("child stdout")?;
        let mut r = BufReader::new(out);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "READY" {
            return Err(format!("child said {line:?} instead of READY"));
        }
        readers.push(r);
    }
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let rss = rss_before
        .iter()
        .map(|(pid, before)| Rss {
            pid: *pid,
            before_kib: *before,
            after_kib: vm_rss_kib(*pid),
        })
        .collect();
    let go = now_us() / 1000 + 300;
    for (child, _) in children.iter_mut() {
        if let Some(stdin) = child.stdin.as_mut() {
            writeln!(stdin, "GO {go}").map_err(|e| e.to_string())?;
            stdin.flush().map_err(|e| e.to_string())?;
        }
    }
    let mut total: Option<Report> = None;
    for (mut child, json) in children {
        let status = child.wait().map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&json)
            .map_err(|e| format!("child {status}: no report {}: {e}", json.display()))?;
        let _ = std::fs::remove_file(&json);
        let r: Report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        total = Some(match total {
            None => r,
            Some(t) => merge(t, &r),
        });
    }
    drop(readers);
    let mut total = total.ok_or("no child")?;
    total.tag = tag.to_string();
    total.procs = args.procs;
    total.urls = args.urls.clone();
    Ok((total, rss))
}

fn main() {
    let args = Args::parse();
    if args.urls.is_empty() {
        eprintln!("loadgen: give at least one --url");
        std::process::exit(2);
    }
    if args.rates.iter().any(|r| !(0.0..=5.0).contains(r)) {
        eprintln!("loadgen: --rates must be 0 to 5 msg/s per visitor (kefu's visitor limit); use more visitors");
        std::process::exit(2);
    }
    let procs = args.procs.max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            std::process::exit(1);
        }
    };
    let tag = args.tag.clone().unwrap_or_else(|| {
        format!(
            "lg{:08x}",
            rand::random::<u32>() // short and unique enough per run
        )
    });
    if tag.contains('.') {
        eprintln!("loadgen: --tag must not contain '.'");
        std::process::exit(2);
    }
    let result: Result<Report, String> = rt.block_on(async {
        if args.child {
            let tokens = args.agent_tokens.clone();
            let site = args.site.clone().ok_or("child without --site")?;
            return run_worker(&args, tag.clone(), site, tokens, Go::Parent).await;
        }
        let agents = if args.agent_tokens.is_empty() {
            args.agents * procs
        } else {
            args.agent_tokens.len()
        };
        let (site, tokens) = setup(&args, &tag, agents).await?;
        if procs > 1 && tokens.len() < procs {
            return Err(format!(
                "--procs {procs} needs at least one agent token per process"
            ));
        }
        let rss_before: Vec<(u32, u64)> =
            args.rss_pids.iter().map(|p| (*p, vm_rss_kib(*p))).collect();
        let (mut report, rss) = if procs > 1 {
            let args2 = args.clone();
            let tag2 = tag.clone();
            tokio::task::spawn_blocking(move || {
                run_children(&args2, &tag2, &site, &tokens, &rss_before)
            })
            .await
            .map_err(|e| e.to_string())??
        } else {
            let go = Go::Local {
                settle: args.settle,
                rss_before,
            };
            let mut r = run_worker(&args, tag.clone(), site, tokens, go).await?;
            let rss = std::mem::take(&mut r.rss);
            (r, rss)
        };
        let conns = (report.visitors_connected + report.agents_connected) as f64;
        if !rss.is_empty() && conns > 0.0 {
            let grow: i64 = rss
                .iter()
                .map(|r| r.after_kib as i64 - r.before_kib as i64)
                .sum();
            report.rss_per_connection_kib = Some(grow as f64 / conns);
        }
        report.rss = rss;
        report.procs = procs;
        Ok(report)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if args.child {
        return;
    }
    print_report(&report);
    if args.fail_on_error {
        let silent = report
            .phases
            .iter()
            .any(|p| p.rate_per_visitor > 0.0 && p.delivered == 0);
        let short_conn =
            report.visitors_connected < report.visitors || report.agents_connected < report.agents;
        if report.errors_total > 0 || silent || short_conn || report.unacked > 0 {
            eprintln!("loadgen: FAILED (errors, missing connections, or nothing delivered)");
            std::process::exit(1);
        }
    }
}
