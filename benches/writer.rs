//! The message writer's batching: `MessageWriter::write` for batches of 1, 16 and 128
//! messages against a scratch PostgreSQL database (benches/support/pg.rs). Each batch is
//! sent at once and awaited whole; with one shard and the writer on the same
//! single-threaded actix runtime, the shard takes the whole batch into one transaction
//! (lock conversations, look up resends, number, insert, update conversations, commit).
//! Messages go round-robin over 128 conversations, each with a fresh `client_msg_id`.
//! Per-element time is the cost of one durable message at that batch size.

#[path = "support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use kefu::bus::Bus;
use kefu::db::writer::{MessageWriter, NewMessage, WriteOutcome};
use kefu::db::Db;
use kefu::metrics::Metrics;
use kefu::protocol::SenderType;

const CONVERSATIONS: usize = 128;

fn batches(c: &mut Criterion) {
    let Some(scratch) = pg::ScratchDb::create() else {
        return;
    };
    let sys = actix::System::new();
    let (writer, convs) = sys.block_on(async {
        let db = Db::new(&scratch.url, 4, Duration::from_secs(10)).expect("pool");
        let site = db
            .run(async |conn| {
                kefu::db::sites::create(
                    conn,
                    "bench".into(),
                    Vec::new(),
                    "Hi".into(),
                    "Away".into(),
                )
                .await
            })
            .await
            .expect("site");
        let mut convs = Vec::new();
        for i in 0..CONVERSATIONS {
            let token = format!("bench-visitor-{i}");
            let (visitor, conv) = db
                .run(async |conn| {
                    let v = kefu::db::visitors::create(conn, site.id, token.as_bytes()).await?;
                    let (c, _) =
                        kefu::db::conversations::get_or_create(conn, site.id, v.id).await?;
                    Ok((v.id, c.id))
                })
                .await
                .expect("conversation");
            convs.push((visitor, conv));
        }
        let metrics = Metrics::new();
        let bus = Bus::new("bench", metrics.clone());
        let writer = MessageWriter::start(
            db,
            bus,
            Arc::new(tokio::sync::Notify::new()),
            metrics,
            1,
            512,
        );
        (writer, convs)
    });
    let counter = AtomicU64::new(0);
    let mut g = c.benchmark_group("writer");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for n in [1usize, 16, 128] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("commit batch", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                sys.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let writes = (0..n).map(|i| {
                            let k = counter.fetch_add(1, Ordering::Relaxed);
                            let (visitor, conv) = convs[(k as usize + i) % CONVERSATIONS];
                            writer.write(NewMessage {
                                conversation_id: conv,
                                sender_type: SenderType::Visitor,
                                sender_id: Some(visitor),
                                private: false,
                                body: "Hello, I have a question about my order.".into(),
                                client_msg_id: Some(format!("bench-{k}")),
                                attachments: Vec::new(),
                                origin: None,
                            })
                        });
                        for r in join_all(writes).await {
                            assert!(matches!(r, Ok(WriteOutcome::Created(_))), "{r:?}");
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    drop(writer);
    drop(sys);
    drop(scratch);
}

criterion_group!(benches, batches);
criterion_main!(benches);
