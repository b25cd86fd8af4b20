//! The two-level cache in front of PostgreSQL: moka in memory (L1), Redis (L2).
//!
//! Reads go through the cheap, cloneable [`Cache`] handle: an L1 hit is a lock-free moka
//! lookup on the caller's thread (sending every `/api/config` through one actor's mailbox
//! would make the hottest route single-threaded). Misses fall through to Redis, then to
//! PostgreSQL, and fill both levels; moka coalesces concurrent misses of one key.
//!
//! Writes invalidate through the [`CacheActor`]: it drops the key from L1 and L2 and
//! broadcasts the invalidation on `<prefix>:invalidate`, where every node's `CacheActor`
//! receives it and drops its own L1 copy. It also keeps the hit-ratio gauges current.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::protocol::{Agent, Message, Site, Visitor};
use crate::redis_client::Redis;

/// How long entries live, per kind.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtls {
    pub site: Duration,
    pub token: Duration,
    pub agents_online: Duration,
    pub conversation: Duration,
    pub visitor: Duration,
    pub history: Duration,
}

impl Default for CacheTtls {
    fn default() -> Self {
        CacheTtls {
            site: Duration::from_secs(300),
            token: Duration::from_secs(30),
            agents_online: Duration::from_secs(2),
            conversation: Duration::from_secs(600),
            visitor: Duration::from_secs(300),
            history: Duration::from_secs(60),
        }
    }
}

/// Messages kept per conversation in the history cache (the newest page).
pub const HISTORY_PAGE: i64 = 50;

/// What never changes about a conversation: enough to check it exists and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConversationMeta {
    pub id: uuid::Uuid,
    pub site_id: uuid::Uuid,
    pub visitor_id: uuid::Uuid,
}

/// The newest messages of a conversation (all of them, notes included) as of `last_seq`.
#[derive(Debug, Clone)]
struct HistoryPage {
    last_seq: i64,
    /// True when the page starts at the conversation's first message.
    complete: bool,
    messages: Arc<Vec<Message>>,
}

/// What an invalidation names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum CacheKey {
    Site(String),
    Token(String),
    AllTokens,
    Visitor(uuid::Uuid),
}

#[derive(Clone)]
pub struct Cache {
    sites: moka::future::Cache<String, Option<Arc<Site>>>,
    tokens: moka::future::Cache<String, Option<Arc<Agent>>>,
    agents_online: moka::future::Cache<(), i64>,
    conversations: moka::future::Cache<uuid::Uuid, Option<ConversationMeta>>,
    visitors: moka::future::Cache<uuid::Uuid, Option<Arc<Visitor>>>,
    history: moka::sync::Cache<uuid::Uuid, HistoryPage>,
    redis: Option<Redis>,
    prefix: Arc<str>,
    ttls: CacheTtls,
    db: Db,
    metrics: Metrics,
}

impl Cache {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        prefix: &str,
        ttls: CacheTtls,
        metrics: Metrics,
    ) -> Cache {
        Cache {
            sites: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttls.site)
                .build(),
            tokens: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttls.token)
                .build(),
            agents_online: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(ttls.agents_online)
                .build(),
            conversations: moka::future::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttls.conversation)
                .build(),
            visitors: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttls.visitor)
                .build(),
            history: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_live(ttls.history)
                .build(),
            redis,
            prefix: prefix.into(),
            ttls,
            db,
            metrics,
        }
    }

    /// A cache that keeps nothing: every read goes to PostgreSQL (`KEFU_CACHE=false`, for
    /// measuring what the cache buys; never for production).
    pub fn without_caching(mut self) -> Cache {
        self.sites = moka::future::Cache::builder().max_capacity(0).build();
        self.tokens = moka::future::Cache::builder().max_capacity(0).build();
        self.agents_online = moka::future::Cache::builder().max_capacity(0).build();
        self.conversations = moka::future::Cache::builder().max_capacity(0).build();
        self.visitors = moka::future::Cache::builder().max_capacity(0).build();
        self.history = moka::sync::Cache::builder().max_capacity(0).build();
        self.redis = None;
        self
    }

    fn hit(&self, level: &str) {
        self.metrics.cache_hits.with_label_values(&[level]).inc();
    }
    fn miss(&self, level: &str) {
        self.metrics.cache_misses.with_label_values(&[level]).inc();
    }

    fn l2_key(&self, kind: &str, key: &str) -> String {
        format!("{}:cache:{kind}:{key}", self.prefix)
    }

    async fn l2_get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let redis = self.redis.as_ref()?;
        if !redis.usable() {
            return None;
        }
        let got: Option<String> = redis
            .query::<Option<String>>("cache_get", redis::cmd("GET").arg(key))
            .await
            .flatten();
        match got.and_then(|s| serde_json::from_str(&s).ok()) {
            Some(v) => {
                self.hit("l2");
                Some(v)
            }
            None => {
                self.miss("l2");
                None
            }
        }
    }

    async fn l2_set<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        let Some(redis) = self.redis.as_ref() else {
            return;
        };
        let Ok(text) = serde_json::to_string(value) else {
            return;
        };
        let _ = redis
            .query::<()>(
                "cache_set",
                redis::cmd("SET")
                    .arg(key)
                    .arg(text)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await;
    }

    /// Site by public widget key: L1, then L2, then PostgreSQL.
    pub async fn site_by_key(&self, widget_key: &str) -> AppResult<Option<Arc<Site>>> {
        if let Some(v) = self.sites.get(widget_key).await {
            self.hit("l1");
            return Ok(v);
        }
        self.miss("l1");
        let key = widget_key.to_string();
        let this = self.clone();
        self.sites
            .try_get_with(key.clone(), async move {
                let l2 = this.l2_key("site", &key);
                if let Some(site) = this.l2_get::<Site>(&l2).await {
                    return Ok(Some(Arc::new(site)));
                }
                let site = this
                    .db
                    .run(async |conn| crate::db::sites::by_widget_key(conn, &key).await)
                    .await?;
                if let Some(s) = &site {
                    this.l2_set(&l2, s, this.ttls.site).await;
                }
                Ok::<_, AppError>(site.map(Arc::new))
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
    }

    /// Agent behind a bearer token hash (L1 only: tokens are checked against PostgreSQL
    /// at most once per TTL per node, and revocations invalidate every node).
    pub async fn agent_by_token(
        &self,
        token_hash: &[u8],
        idle: chrono::Duration,
    ) -> AppResult<Option<Arc<Agent>>> {
        let key = hex::encode(token_hash);
        if let Some(v) = self.tokens.get(&key).await {
            self.hit("l1");
            return Ok(v);
        }
        self.miss("l1");
        let db = self.db.clone();
        let hash = token_hash.to_vec();
        self.tokens
            .try_get_with(key, async move {
                let agent = db
                    .run(async |conn| crate::db::agents::session_agent(conn, &hash, idle).await)
                    .await?;
                Ok::<_, AppError>(agent.map(Arc::new))
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
    }

    /// Number of agents available now (cached for a couple of seconds).
    pub async fn agents_online(&self, window: chrono::Duration) -> AppResult<i64> {
        if let Some(v) = self.agents_online.get(&()).await {
            return Ok(v);
        }
        let db = self.db.clone();
        self.agents_online
            .try_get_with((), async move {
                db.run(async |conn| crate::db::agents::count_available(conn, window).await)
                    .await
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
    }

    /// A conversation's fixed facts (L1, then L2, then PostgreSQL); `None` if it does not
    /// exist. Used to check ids on the hot paths without touching PostgreSQL.
    pub async fn conversation_meta(&self, id: uuid::Uuid) -> AppResult<Option<ConversationMeta>> {
        if let Some(v) = self.conversations.get(&id).await {
            self.hit("l1");
            return Ok(v);
        }
        self.miss("l1");
        let this = self.clone();
        self.conversations
            .try_get_with(id, async move {
                let l2 = this.l2_key("conversation", &id.to_string());
                if let Some(meta) = this.l2_get::<ConversationMeta>(&l2).await {
                    return Ok(Some(meta));
                }
                let conv = this
                    .db
                    .run(async |conn| crate::db::conversations::get(conn, id).await)
                    .await?;
                let meta = conv.map(|c| ConversationMeta {
                    id: c.id,
                    site_id: c.site_id,
                    visitor_id: c.visitor_id,
                });
                if let Some(m) = &meta {
                    this.l2_set(&l2, m, this.ttls.conversation).await;
                }
                Ok::<_, AppError>(meta)
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
    }

    /// A visitor's profile (L1, then L2, then PostgreSQL).
    pub async fn visitor(&self, id: uuid::Uuid) -> AppResult<Option<Arc<Visitor>>> {
        if let Some(v) = self.visitors.get(&id).await {
            self.hit("l1");
            return Ok(v);
        }
        self.miss("l1");
        let this = self.clone();
        self.visitors
            .try_get_with(id, async move {
                let l2 = this.l2_key("visitor", &id.to_string());
                if let Some(v) = this.l2_get::<Visitor>(&l2).await {
                    return Ok(Some(Arc::new(v)));
                }
                let v = this
                    .db
                    .run(async |conn| crate::db::visitors::get(conn, id).await)
                    .await?;
                if let Some(v) = &v {
                    this.l2_set(&l2, v, this.ttls.visitor).await;
                }
                Ok::<_, AppError>(v.map(Arc::new))
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
    }

    /// Messages after `after_seq` (at most 200, oldest first, and whether more exist),
    /// answered from the cached newest page when it covers them.
    ///
    /// The page is checked against the conversation's `last_seq` (a primary-key read)
    /// before use, so a lost invalidation can never hide a committed message from `resume`.
    pub async fn history_after(
        &self,
        conversation: uuid::Uuid,
        after_seq: i64,
        include_private: bool,
    ) -> AppResult<(Vec<Message>, bool)> {
        let (last_seq, page) = self
            .db
            .run(async |conn| {
                let last = crate::db::conversations::last_seq(conn, conversation).await?;
                let Some(last) = last else {
                    return Err(AppError::not_found("conversation"));
                };
                if let Some(p) = self.history.get(&conversation) {
                    if p.last_seq == last {
                        return Ok((last, Some(p)));
                    }
                }
                Ok((last, None))
            })
            .await?;
        let page = match page {
            Some(p) => {
                self.hit("l1");
                p
            }
            None => {
                self.miss("l1");
                let (mut newest, more_before) = self
                    .db
                    .run(async |conn| {
                        crate::db::messages::before(conn, conversation, last_seq + 1, HISTORY_PAGE)
                            .await
                    })
                    .await?;
                newest.retain(|m| m.seq <= last_seq);
                let p = HistoryPage {
                    last_seq,
                    complete: !more_before,
                    messages: Arc::new(newest),
                };
                self.history.insert(conversation, p.clone());
                p
            }
        };
        let covers = page.complete
            || page
                .messages
                .first()
                .is_some_and(|m| m.seq <= after_seq + 1);
        if !covers {
            return self
                .db
                .run(async |conn| {
                    crate::db::messages::after(
                        conn,
                        conversation,
                        after_seq,
                        crate::db::messages::MAX_PAGE,
                        include_private,
                    )
                    .await
                })
                .await;
        }
        let out: Vec<Message> = page
            .messages
            .iter()
            .filter(|m| m.seq > after_seq && (include_private || !m.private))
            .cloned()
            .collect();
        Ok((out, false))
    }

    /// A message was committed in `conversation`: its cached page is stale.
    pub fn forget_history(&self, conversation: uuid::Uuid) {
        self.history.invalidate(&conversation);
    }

    /// Drops a key from this node's L1.
    pub async fn invalidate_local(&self, key: &CacheKey) {
        match key {
            CacheKey::Site(k) => self.sites.invalidate(k).await,
            CacheKey::Token(k) => self.tokens.invalidate(k).await,
            CacheKey::AllTokens => self.tokens.invalidate_all(),
            CacheKey::Visitor(id) => self.visitors.invalidate(id).await,
        }
        self.agents_online.invalidate_all();
    }

    /// Drops a key everywhere: this node's L1, L2, and (through Redis) other nodes' L1.
    pub async fn invalidate(&self, key: CacheKey) {
        self.invalidate_local(&key).await;
        let Some(redis) = self.redis.as_ref() else {
            return;
        };
        let l2 = match &key {
            CacheKey::Site(k) => Some(self.l2_key("site", k)),
            CacheKey::Visitor(id) => Some(self.l2_key("visitor", &id.to_string())),
            CacheKey::Token(_) | CacheKey::AllTokens => None,
        };
        if let Some(l2) = l2 {
            if redis
                .query::<i64>("cache_del", redis::cmd("DEL").arg(l2))
                .await
                .is_none()
            {
                log::warn!("cache: Redis unavailable; other nodes expire {key:?} by TTL");
            }
        }
        if let Ok(payload) = serde_json::to_string(&key) {
            let _ = redis
                .query::<i64>(
                    "cache_invalidate",
                    redis::cmd("PUBLISH")
                        .arg(format!("{}:invalidate", self.prefix))
                        .arg(payload),
                )
                .await;
        }
    }

    pub fn forget_agents_online(&self) {
        self.agents_online.invalidate_all();
    }

    fn update_ratios(&self) {
        for level in ["l1", "l2"] {
            let h = self.metrics.cache_hits.with_label_values(&[level]).get() as f64;
            let m = self.metrics.cache_misses.with_label_values(&[level]).get() as f64;
            let ratio = if h + m > 0.0 { h / (h + m) } else { 0.0 };
            self.metrics
                .cache_hit_ratio
                .with_label_values(&[level])
                .set(ratio);
        }
    }
}

/// Applies invalidations from other nodes and keeps the hit-ratio gauges current.
pub struct CacheActor {
    cache: Cache,
    redis_url: Option<String>,
}

impl CacheActor {
    pub fn new(cache: Cache, redis_url: Option<String>) -> CacheActor {
        CacheActor { cache, redis_url }
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.cache.update_ratios();
        ctx.run_interval(Duration::from_secs(1), |a, _| a.cache.update_ratios());
        if let Some(url) = self.redis_url.clone() {
            let me = ctx.address();
            let channel = format!("{}:invalidate", self.cache.prefix);
            actix_web::rt::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let res: Result<(), String> = async {
                        let client =
                            redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                        let mut ps = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
                        ps.subscribe(&channel).await.map_err(|e| e.to_string())?;
                        backoff = Duration::from_millis(200);
                        let mut stream = ps.on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(payload) = msg.get_payload::<String>() {
                                if let Ok(key) = serde_json::from_str::<CacheKey>(&payload) {
                                    me.do_send(Invalidated(key));
                                }
                            }
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = res {
                        log::debug!("cache: invalidation channel down: {e}");
                    }
                    if !me.connected() {
                        return;
                    }
                    actix_web::rt::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
        }
    }
}

/// An invalidation received from another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Invalidated(pub CacheKey);

impl Handler<Invalidated> for CacheActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: Invalidated, _: &mut Self::Context) -> Self::Result {
        let cache = self.cache.clone();
        Box::pin(async move { cache.invalidate_local(&msg.0).await })
    }
}
