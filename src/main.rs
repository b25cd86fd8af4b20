//! The `kefu` command: `serve` (default), `worker`, `migrate`, `agent create`, `demo`.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kefu::config::Settings;
use kefu::db::Db;
use kefu::protocol::Role;

/// kefu (客服): a realtime customer-service chat server.
///
/// Every setting below can also come from the environment variable named beside it, or
/// from a `.env` file in the working directory.
#[derive(Parser)]
#[command(name = "kefu", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage agents.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Create a demo site and an admin when missing, and print how to use them.
    Demo,
    /// Run only the background worker (webhooks, auto-resolve, event retention); several
    /// may run. Pair with `KEFU_WORKER=false` on the serving nodes.
    Worker,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Create an agent; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "agent")]
        role: String,
        #[arg(long, default_value_t = 5)]
        max_open: i32,
    },
}

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.settings),
        Command::Migrate => kefu::db::migrate(&cli.settings.database_url).map(|done| {
            if done.is_empty() {
                println!("database is up to date");
            }
            for m in done {
                println!("applied {m}");
            }
        }),
        Command::Agent {
            action:
                AgentAction::Create {
                    email,
                    name,
                    role,
                    max_open,
                },
        } => create_agent(&cli.settings, &email, &name, &role, max_open),
        Command::Demo => demo(&cli.settings),
        Command::Worker => worker(cli.settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kefu: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let running = kefu::start(settings).await?;
        wait_for_signal().await;
        log::info!("signal received: stopping gracefully");
        running.stop().await;
        Ok(())
    })
}

fn worker(settings: Settings) -> Result<(), String> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let within = std::time::Duration::from_secs(settings.shutdown_secs.max(1));
        let running = kefu::worker::WorkerProcess::start(settings).await?;
        wait_for_signal().await;
        log::info!("signal received: stopping the worker");
        running.stop(within).await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `f` on a one-off runtime with a small pool (for the CLI's one-shot commands).
fn with_db<T>(
    settings: &Settings,
    f: impl AsyncFnOnce(&Db) -> Result<T, String>,
) -> Result<T, String> {
    kefu::db::migrate(&settings.database_url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let db =
            Db::new(&settings.database_url, 2, settings.db_timeout()).map_err(|e| e.message)?;
        f(&db).await
    })
}

fn create_agent(
    settings: &Settings,
    email: &str,
    name: &str,
    role: &str,
    max_open: i32,
) -> Result<(), String> {
    let role = Role::parse(role).ok_or("--role must be admin or agent")?;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    kefu::password::check_strength(&password).map_err(|e| e.message)?;
    let phc = kefu::password::hash(&password).map_err(|e| e.message)?;
    let agent = with_db(settings, async |db| {
        db.run(async |conn| kefu::db::agents::create(conn, email, name, role, &phc, max_open).await)
            .await
            .map_err(|e| e.message)
    })?;
    println!(
        "created {} {} ({})",
        agent.role.as_str(),
        agent.email,
        agent.id
    );
    Ok(())
}

fn demo(settings: &Settings) -> Result<(), String> {
    let email = settings
        .admin_email
        .clone()
        .unwrap_or_else(|| "admin@kefu.local".to_string());
    let supplied = settings.admin_password.clone();
    let (site, created_admin) = with_db(settings, async |db| {
        db.run(async |conn| {
            let sites = kefu::db::sites::list(conn).await?;
            let site = match sites.into_iter().next() {
                Some(s) => s,
                None => {
                    kefu::db::sites::create(
                        conn,
                        "Demo shop".to_string(),
                        Vec::new(),
                        "Hi! How can we help you today?".to_string(),
                        "We're away right now. Leave a message and we'll get back to you."
                            .to_string(),
                    )
                    .await?
                }
            };
            let admin = kefu::db::agents::by_email(conn, &email).await?;
            Ok((site, admin.is_none()))
        })
        .await
        .map_err(|e| e.message)
    })?;
    let password = if created_admin {
        let password = supplied.unwrap_or_else(|| {
            // 96 random bits, easy to type.
            hex::encode(rand::random::<[u8; 12]>())
        });
        let phc = kefu::password::hash(&password).map_err(|e| e.message)?;
        with_db(settings, async |db| {
            db.run(async |conn| {
                kefu::db::agents::create(conn, &email, "Admin", Role::Admin, &phc, 5).await
            })
            .await
            .map_err(|e| e.message)
        })?;
        Some(password)
    } else {
        None
    };
    let port = settings.bind.port();
    println!();
    println!("  kefu demo is ready");
    println!("  widget key : {}", site.widget_key);
    println!("  admin      : {email}");
    match password {
        Some(p) => println!("  password   : {p}   (shown once; keep it)"),
        None => println!("  password   : (unchanged; set earlier)"),
    }
    println!("  demo page  : http://127.0.0.1:{port}/");
    println!(
        "  visitor ws : ws://127.0.0.1:{port}/ws/visitor?site={}",
        site.widget_key
    );
    println!("  login      : curl -s -X POST http://127.0.0.1:{port}/api/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{email}\",\"password\":\"…\"}}'");
    println!();
    Ok(())
}
