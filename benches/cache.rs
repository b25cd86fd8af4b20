//! The cache hit path: `Cache::site_by_key` answered from L1 (moka), what every
//! `/api/config` and visitor handshake does. The entry gets into L1 the real way — one
//! miss read from a scratch PostgreSQL database (benches/support/pg.rs) — and every
//! measured call is a hit.

#[path = "support/pg.rs"]
mod pg;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::actors::cache::{Cache, CacheTtls};
use kefu::db::Db;
use kefu::metrics::Metrics;

fn hit(c: &mut Criterion) {
    let Some(scratch) = pg::ScratchDb::create() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (cache, key, metrics) = rt.block_on(async {
        let db = Db::new(&scratch.url, 2, Duration::from_secs(5)).expect("pool");
        let site = db
            .run(async |conn| {
                kefu::db::sites::create(
                    conn,
                    "bench".into(),
                    Vec::new(),
                    "Hi!".into(),
                    "Away.".into(),
                )
                .await
            })
            .await
            .expect("site");
        let metrics = Metrics::new();
        let cache = Cache::new(db, None, "bench", CacheTtls::default(), metrics.clone());
        // The one miss: PostgreSQL → L1.
        let got = cache.site_by_key(&site.widget_key).await.expect("lookup");
        assert!(got.is_some());
        (cache, site.widget_key, metrics)
    });
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("site_by_key L1 hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.site_by_key(black_box(&key)).await.ok());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    let misses = metrics.cache_misses.with_label_values(&["l1"]).get();
    assert_eq!(misses, 1, "every measured call must be an L1 hit");
    drop(cache);
    drop(rt);
    drop(scratch);
}

criterion_group!(benches, hit);
criterion_main!(benches);
