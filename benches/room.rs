//! Room fan-out: one `Deliver` to a room with 1,000 members, until every member's
//! mailbox has handled its frame. The members are stand-in sessions (an actor that counts
//! `Outbound` frames) behind real `SessionHandle`s (the bounded queue), living on another
//! arbiter than the room, as sessions live on the HTTP workers and rooms on their own
//! arbiters in a node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::actors::dispatcher::Dispatcher;
use kefu::actors::room::{Deliver, Join, Room};
use kefu::actors::session::{Outbound, SessionHandle};
use kefu::bus::Bus;
use kefu::db::writer::MessageWriter;
use kefu::db::Db;
use kefu::metrics::Metrics;
use uuid::Uuid;

const MEMBERS: usize = 1000;

/// Counts frames; tells the bench thread when a whole fan-out has arrived.
struct Member {
    handle: Option<SessionHandle>,
    seen: Arc<AtomicUsize>,
    done: mpsc::Sender<()>,
}

impl Actor for Member {
    type Context = Context<Self>;
}

impl Handler<Outbound> for Member {
    type Result = ();
    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        if let Outbound::Frame(text) = msg {
            std::hint::black_box(&text);
            if let Some(h) = &self.handle {
                h.taken();
            }
            if (self.seen.fetch_add(1, Ordering::AcqRel) + 1).is_multiple_of(MEMBERS) {
                let _ = self.done.send(());
            }
        }
    }
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct SetHandle(SessionHandle);

impl Handler<SetHandle> for Member {
    type Result = ();
    fn handle(&mut self, msg: SetHandle, _: &mut Context<Self>) {
        self.handle = Some(msg.0);
    }
}

fn fan_out(c: &mut Criterion) {
    let (room_tx, room_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let sys = System::new();
        sys.block_on(async move {
            // Never touched: the room's writer is not used by Deliver.
            let db = Db::new(
                "postgres://bench@127.0.0.1:1/unused",
                1,
                Duration::from_secs(1),
            )
            .expect("pool");
            let metrics = Metrics::new();
            let bus = Bus::new("bench", metrics.clone());
            let writer = MessageWriter::start(
                db,
                bus.clone(),
                Arc::new(tokio::sync::Notify::new()),
                metrics.clone(),
                1,
                16,
            );
            let idle = Duration::from_secs(3600);
            let dispatcher =
                Dispatcher::new(bus.rooms.clone(), Vec::new(), writer.clone(), idle, metrics)
                    .start();
            let room = Room::new(Uuid::new_v4(), idle, dispatcher, writer).start();
            let members = Arbiter::new();
            let seen = Arc::new(AtomicUsize::new(0));
            for i in 0..MEMBERS {
                let (seen, done) = (seen.clone(), done_tx.clone());
                let addr = Member::start_in_arbiter(&members.handle(), move |_| Member {
                    handle: None,
                    seen,
                    done,
                });
                let handle = SessionHandle::new(i as u64, addr.clone().recipient(), 1000);
                addr.send(SetHandle(handle.clone())).await.expect("member");
                assert!(room.send(Join { handle }).await.expect("room"));
            }
            room_tx.send(room).expect("bench thread");
        });
        sys.run().expect("system");
    });
    let room = room_rx.recv().expect("room");
    let frame = ByteString::from(format!(
        r#"{{"type":"message.created","conversation_id":"{0}","message":{{"id":"{1}","conversation_id":"{0}","seq":7,"sender_type":"agent","sender_id":"{1}","private":false,"body":"Thanks, I'm looking into it now.","client_msg_id":"a-1","created_at":"2026-01-01T00:00:00Z"}}}}"#,
        Uuid::new_v4(),
        Uuid::new_v4()
    ));
    let mut g = c.benchmark_group("room");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("deliver to 1000 members", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                room.do_send(Deliver {
                    text: frame.clone(),
                    origin: None,
                });
                done_rx.recv().expect("fan-out");
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
