//! A scratch PostgreSQL database for the benches that need one (cache, writer):
//! `kefu_bench_<pid>_<random>`, created from `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrated, and dropped on drop.
#![allow(dead_code)]

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

pub struct ScratchDb {
    pub url: String,
    admin_url: String,
    name: String,
}

fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

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

fn admin(sql: String, url: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .map_err(|e| format!("{}: {e}", kefu::db::redact(url)))?;
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

impl ScratchDb {
    /// None (with a note on stderr) when PostgreSQL is not reachable.
    pub fn create() -> Option<ScratchDb> {
        let base = base_url();
        let name = format!(
            "kefu_bench_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let admin_url = with_database(&base, "postgres");
        if let Err(e) = admin(format!("CREATE DATABASE {name}"), &admin_url) {
            eprintln!("bench: no scratch database ({e}); skipping");
            return None;
        }
        let url = with_database(&base, &name);
        let db = ScratchDb {
            url,
            admin_url,
            name,
        };
        if let Err(e) = kefu::db::migrate(&db.url) {
            eprintln!("bench: migration failed: {e}");
            return None;
        }
        Some(db)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(sql, &self.admin_url) {
            eprintln!("bench: could not drop {}: {e}", self.name);
        }
    }
}
