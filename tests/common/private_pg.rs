//! A private PostgreSQL server (initdb into a temporary directory, its own port) for tests
//! that stop, restart or freeze the database without disturbing any other test.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::eventually;

pub struct PrivatePg {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    running: bool,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL bin directory")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run_as_pg(bin: &Path, tool: &str, args: &[&str]) -> std::process::ExitStatus {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run a PostgreSQL tool")
}

impl PrivatePg {
    pub async fn start() -> PrivatePg {
        let port = super::private_redis::PrivateRedis::free_port();
        let dir = std::env::temp_dir().join(format!("kefu-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let bin = pg_bin();
        let data = dir.join("data");
        let status = run_as_pg(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        assert!(status.success(), "initdb failed");
        let mut pg = PrivatePg {
            port,
            dir,
            bin,
            running: false,
        };
        pg.resume().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_string()
    }

    /// Starts (again) on the same port and data directory, and waits until it answers.
    pub async fn resume(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.to_str().unwrap()
        );
        let log = self.dir.join("log").to_str().unwrap().to_string();
        let status = run_as_pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(status.success(), "pg_ctl start failed");
        self.running = true;
        let port = self.port;
        eventually("private PostgreSQL answers", || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await;
    }

    /// Fast shutdown: open connections are cut.
    pub fn stop(&mut self) {
        if self.running {
            run_as_pg(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data(), "-m", "fast", "-w", "stop"],
            );
            self.running = false;
        }
    }

    /// The URL of a database on this server (`postgres` always exists).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            run_as_pg(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
