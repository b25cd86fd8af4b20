//! `baseline`: the yardsticks kefu's benchmarks are measured against (BENCHMARKS.md).
//!
//! - `baseline http --bind ADDR (--body-url URL | --body-file FILE)`: a bare actix-web
//!   handler that answers `GET /api/config` with fixed bytes — the same bytes kefu's
//!   `/api/config` returns (fetched once from `--body-url` at start) — and
//!   `application/json`. Nothing else: no cache, no middleware, no metrics.
//! - `baseline ws --bind ADDR`: an in-memory chat server on actix-web-actors that speaks
//!   kefu's frames (`kefu::protocol`): `/ws/visitor` sends `session.welcome`, answers each
//!   `message.send` at once with `message.ack` and hands `message.created` to every
//!   `/ws/agent` socket (which got `agent.welcome`). No database, no rooms, no limits:
//!   what the machine and the load generator can do, the ceiling for kefu's figures. An
//!   idle visitor here is an echo-style actor with a heartbeat, the figure kefu's
//!   per-connection memory is compared with.
//!
//! Both answer `GET /healthz`. Workers default to the number of CPUs, like kefu.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytestring::ByteString;
use chrono::Utc;
use clap::{Parser, Subcommand};
use kefu::protocol::{
    Agent, AgentStatus, ClientFrame, Message, Role, SenderType, ServerFrame, Visitor,
};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "baseline", about = "Baselines for kefu's benchmarks")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Bare actix-web handler for GET /api/config returning fixed bytes.
    Http {
        #[arg(long, default_value = "127.0.0.1:6100")]
        bind: String,
        /// Fetch the body once from this URL (kefu's /api/config?site=…).
        #[arg(long)]
        body_url: Option<String>,
        /// Or read it from this file.
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
        #[arg(long)]
        workers: Option<usize>,
    },
    /// In-memory WebSocket chat server speaking kefu's frames.
    Ws {
        #[arg(long, default_value = "127.0.0.1:6101")]
        bind: String,
        #[arg(long)]
        workers: Option<usize>,
    },
}

fn workers(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    })
    .max(1)
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Http {
            bind,
            body_url,
            body_file,
            workers: w,
        } => {
            let body = match (body_url, body_file) {
                (Some(url), _) => fetch(&url)?,
                (None, Some(f)) => std::fs::read(f)?,
                (None, None) => {
                    return Err(std::io::Error::other("give --body-url or --body-file"));
                }
            };
            eprintln!(
                "baseline http: {} bytes on http://{bind}/api/config",
                body.len()
            );
            serve_http(bind, web::Bytes::from(body), workers(w))
        }
        Mode::Ws { bind, workers: w } => serve_ws(bind, workers(w)),
    }
}

fn fetch(url: &str) -> std::io::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let res = reqwest::get(url).await.map_err(std::io::Error::other)?;
        if !res.status().is_success() {
            return Err(std::io::Error::other(format!("{url}: {}", res.status())));
        }
        Ok(res.bytes().await.map_err(std::io::Error::other)?.to_vec())
    })
}

// ---------------------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------------------

#[actix_web::main]
async fn serve_http(bind: String, body: web::Bytes, workers: usize) -> std::io::Result<()> {
    HttpServer::new(move || {
        let body = body.clone();
        App::new()
            .route(
                "/api/config",
                web::get().to(move || {
                    let body = body.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
            .route("/healthz", web::get().to(HttpResponse::Ok))
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}

// ---------------------------------------------------------------------------------------
// ws
// ---------------------------------------------------------------------------------------

const HEARTBEAT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(actix::Message)]
#[rtype(result = "()")]
struct Text(ByteString);

#[derive(Default)]
struct Hub {
    agents: RwLock<HashMap<u64, Recipient<Text>>>,
    ids: AtomicU64,
    seq: AtomicI64,
}

struct VisitorWs {
    hub: Arc<Hub>,
    visitor: Visitor,
    conversation: Uuid,
    seq: i64,
    beat: Instant,
}

fn heartbeat<A>(ctx: &mut ws::WebsocketContext<A>, beat: fn(&A) -> Instant)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    ctx.run_interval(HEARTBEAT, move |act, ctx| {
        if beat(act).elapsed() > CLIENT_TIMEOUT {
            ctx.stop();
            return;
        }
        ctx.ping(b"");
    });
}

impl Actor for VisitorWs {
    type Context = ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        heartbeat(ctx, |a: &Self| a.beat);
        let text = ServerFrame::Welcome {
            token: "baseline",
            visitor: &self.visitor,
            conversation: None,
            agents_online: true,
            greeting: "hello",
            within_business_hours: true,
            next_open_at: None,
        }
        .encode();
        ctx.text(text);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for VisitorWs {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.beat = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => match ClientFrame::decode(&text) {
                Ok(ClientFrame::MessageSend {
                    client_msg_id,
                    body,
                    ..
                }) => {
                    self.seq += 1;
                    let message = Message {
                        id: Uuid::new_v4(),
                        conversation_id: self.conversation,
                        seq: self.seq,
                        sender_type: SenderType::Visitor,
                        sender_id: Some(self.visitor.id),
                        private: false,
                        body: body.trim().to_string(),
                        client_msg_id: Some(client_msg_id.clone()),
                        created_at: Utc::now(),
                        attachments: Vec::new(),
                    };
                    self.hub.seq.fetch_add(1, Ordering::Relaxed);
                    ctx.text(
                        ServerFrame::MessageAck {
                            client_msg_id: &client_msg_id,
                            message: &message,
                        }
                        .encode(),
                    );
                    let created = ByteString::from(
                        ServerFrame::MessageCreated {
                            conversation_id: self.conversation,
                            message: &message,
                        }
                        .encode(),
                    );
                    if let Ok(agents) = self.hub.agents.read() {
                        for a in agents.values() {
                            a.do_send(Text(created.clone()));
                        }
                    }
                }
                Ok(ClientFrame::Ping {}) => ctx.text(ServerFrame::Pong {}.encode()),
                Ok(_) => {}
                Err(e) => ctx.text(
                    ServerFrame::Error {
                        code: kefu::error::ErrorCode::BadRequest,
                        message: &e.message,
                        client_ref: e.client_ref.as_deref(),
                    }
                    .encode(),
                ),
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            Ok(_) => {}
        }
    }
}

struct AgentWs {
    hub: Arc<Hub>,
    id: u64,
    agent: Agent,
    beat: Instant,
}

impl Actor for AgentWs {
    type Context = ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        heartbeat(ctx, |a: &Self| a.beat);
        ctx.text(ServerFrame::AgentWelcome { agent: &self.agent }.encode());
        if let Ok(mut agents) = self.hub.agents.write() {
            agents.insert(self.id, ctx.address().recipient());
        }
    }
    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Ok(mut agents) = self.hub.agents.write() {
            agents.remove(&self.id);
        }
        Running::Stop
    }
}

impl Handler<Text> for AgentWs {
    type Result = ();
    fn handle(&mut self, msg: Text, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for AgentWs {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.beat = Instant::now();
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            _ => {}
        }
    }
}

async fn visitor_ws(
    hub: web::Data<Arc<Hub>>,
    req: HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let now = Utc::now();
    let actor = VisitorWs {
        hub: hub.get_ref().clone(),
        visitor: Visitor {
            id: Uuid::new_v4(),
            site_id: Uuid::nil(),
            name: None,
            email: None,
            attributes: serde_json::json!({}),
            created_at: now,
            last_seen_at: now,
            user_id: None,
        },
        conversation: Uuid::new_v4(),
        seq: 0,
        beat: Instant::now(),
    };
    ws::start(actor, &req, stream)
}

async fn agent_ws(
    hub: web::Data<Arc<Hub>>,
    req: HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let id = hub.ids.fetch_add(1, Ordering::Relaxed);
    let actor = AgentWs {
        hub: hub.get_ref().clone(),
        id,
        agent: Agent {
            id: Uuid::new_v4(),
            email: format!("agent{id}@baseline.test"),
            name: format!("Agent {id}"),
            role: Role::Agent,
            status: AgentStatus::Online,
            max_open: 5,
            disabled: false,
            created_at: Utc::now(),
        },
        beat: Instant::now(),
    };
    ws::start(actor, &req, stream)
}

#[actix_web::main]
async fn serve_ws(bind: String, workers: usize) -> std::io::Result<()> {
    let hub = Arc::new(Hub::default());
    eprintln!("baseline ws: in-memory chat on ws://{bind}/ws/visitor and /ws/agent");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(hub.clone()))
            .route("/ws/visitor", web::get().to(visitor_ws))
            .route("/ws/agent", web::get().to(agent_ws))
            .route("/healthz", web::get().to(HttpResponse::Ok))
    })
    .workers(workers)
    .backlog(4096)
    .max_connections(100_000)
    .on_connect(|conn, _| {
        if let Some(sock) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            // Like kefu: small frames must not wait for Nagle.
            let _ = sock.set_nodelay(true);
        }
    })
    .bind(bind)?
    .run()
    .await
}
