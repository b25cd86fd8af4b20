//! Frame parsing and serialisation: `ClientFrame::decode`, `ServerFrame::encode`.
//! Every visitor message is decoded once and encoded twice or more (ack, agent frame,
//! visitor frame), so these are on the per-message path.

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::protocol::{
    ClientFrame, Conversation, ConversationStatus, Message, SenderType, ServerFrame, Visitor,
};
use uuid::Uuid;

fn message() -> Message {
    Message {
        id: Uuid::new_v4(),
        conversation_id: Uuid::new_v4(),
        seq: 42,
        sender_type: SenderType::Visitor,
        sender_id: Some(Uuid::new_v4()),
        private: false,
        body: "Hello, I have a question about my order #12345 — it has not arrived yet.".into(),
        client_msg_id: Some("lg1234.0.17.3.1764455555123456".into()),
        created_at: Utc::now(),
        attachments: Vec::new(),
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let send = r#"{"type":"message.send","client_msg_id":"lg1234.0.17.3.1764455555123456","body":"Hello, I have a question about my order #12345 — it has not arrived yet."}"#;
    let agent_send = format!(
        r#"{{"type":"message.send","conversation_id":"{}","client_msg_id":"a-77","body":"Let me check that for you.","private":false}}"#,
        Uuid::new_v4()
    );
    let long = format!(
        r#"{{"type":"message.send","client_msg_id":"long-1","body":"{}"}}"#,
        "x".repeat(4000)
    );
    g.bench_function("message.send", |b| {
        b.iter(|| ClientFrame::decode(black_box(send)))
    });
    g.bench_function("message.send (agent)", |b| {
        b.iter(|| ClientFrame::decode(black_box(&agent_send)))
    });
    g.bench_function("message.send (4000-char body)", |b| {
        b.iter(|| ClientFrame::decode(black_box(&long)))
    });
    g.bench_function("ping", |b| {
        b.iter(|| ClientFrame::decode(black_box(r#"{"type":"ping"}"#)))
    });
    g.bench_function("invalid (wrong field type)", |b| {
        b.iter(|| {
            ClientFrame::decode(black_box(
                r#"{"type":"message.send","client_msg_id":"x9","body":5}"#,
            ))
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let m = message();
    g.bench_function("message.ack", |b| {
        b.iter(|| {
            ServerFrame::MessageAck {
                client_msg_id: "lg1234.0.17.3.1764455555123456",
                message: black_box(&m),
            }
            .encode()
        })
    });
    g.bench_function("message.created", |b| {
        b.iter(|| {
            ServerFrame::MessageCreated {
                conversation_id: m.conversation_id,
                message: black_box(&m),
            }
            .encode()
        })
    });
    let now = Utc::now();
    let visitor = Visitor {
        id: Uuid::new_v4(),
        site_id: Uuid::new_v4(),
        name: Some("Ada".into()),
        email: Some("ada@example.com".into()),
        attributes: serde_json::json!({"page": "https://shop.example.com/cart", "lang": "en"}),
        created_at: now,
        last_seen_at: now,
        user_id: None,
    };
    let conv = Conversation {
        id: Uuid::new_v4(),
        site_id: visitor.site_id,
        visitor_id: visitor.id,
        assignee: None,
        status: ConversationStatus::Pending,
        last_seq: 3,
        created_at: now,
        updated_at: now,
        first_response_at: None,
        resolved_at: None,
        rating: None,
        rating_comment: None,
        labels: None,
    };
    g.bench_function("session.welcome", |b| {
        b.iter(|| {
            ServerFrame::Welcome {
                token: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                visitor: black_box(&visitor),
                conversation: Some(&conv),
                agents_online: true,
                greeting: "Hi! How can we help you today?",
                within_business_hours: true,
                next_open_at: None,
            }
            .encode()
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
