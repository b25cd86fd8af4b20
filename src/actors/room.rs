//! `Room`: one actor per conversation active on this node.
//!
//! Members are the visitor sessions of the conversation connected to this node, held as
//! bounded [`SessionHandle`]s (the room does not know the session type). The room forwards
//! sends to the [`MessageWriter`] — which commits, then publishes on the bus — and fans the
//! bus's events out to its members. With no member for a while it asks the dispatcher to
//! retire it and stops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use uuid::Uuid;

use super::dispatcher::{Dispatcher, RoomIdle};
use super::session::SessionHandle;
use crate::db::writer::{MessageWriter, NewMessage, WriteOutcome};
use crate::error::AppResult;

pub struct Room {
    id: Uuid,
    members: HashMap<u64, SessionHandle>,
    empty_since: Option<Instant>,
    idle_after: Duration,
    dispatcher: Addr<Dispatcher>,
    writer: MessageWriter,
    retired: bool,
}

impl Room {
    pub fn new(
        id: Uuid,
        idle_after: Duration,
        dispatcher: Addr<Dispatcher>,
        writer: MessageWriter,
    ) -> Room {
        Room {
            id,
            members: HashMap::new(),
            empty_since: Some(Instant::now()),
            idle_after,
            dispatcher,
            writer,
            retired: false,
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = (self.idle_after / 2).max(Duration::from_millis(100));
        ctx.run_interval(every, |room, ctx| {
            let idle = room
                .empty_since
                .is_some_and(|t| t.elapsed() >= room.idle_after);
            if idle && !room.retired {
                let me = ctx.address();
                room.dispatcher
                    .send(RoomIdle {
                        conversation_id: room.id,
                        addr: me,
                    })
                    .into_actor(room)
                    .map(|res, room, ctx| {
                        // The dispatcher forgot us: nobody new can find this room.
                        if res.unwrap_or(false) && room.members.is_empty() {
                            room.retired = true;
                            ctx.stop();
                        }
                    })
                    .wait(ctx);
            }
        });
    }
}

/// A session joins; false when the room is retiring (ask the dispatcher again).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Join {
    pub handle: SessionHandle,
}

impl Handler<Join> for Room {
    type Result = bool;
    fn handle(&mut self, msg: Join, _: &mut Self::Context) -> bool {
        if self.retired {
            return false;
        }
        self.members.insert(msg.handle.id, msg.handle);
        self.empty_since = None;
        true
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session_id: u64,
}

impl Handler<Leave> for Room {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        self.members.remove(&msg.session_id);
        if self.members.is_empty() {
            self.empty_since = Some(Instant::now());
        }
    }
}

/// A committed event's visitor frame, to every member but its origin.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub text: ByteString,
    pub origin: Option<u64>,
}

impl Handler<Deliver> for Room {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        for (id, member) in &self.members {
            if Some(*id) != msg.origin {
                member.push(msg.text.clone());
            }
        }
    }
}

/// Store a message through the writer; resolves after the commit.
#[derive(Message)]
#[rtype(result = "AppResult<WriteOutcome>")]
pub struct Post(pub NewMessage);

impl Handler<Post> for Room {
    type Result = ResponseFuture<AppResult<WriteOutcome>>;
    fn handle(&mut self, msg: Post, _: &mut Self::Context) -> Self::Result {
        let writer = self.writer.clone();
        Box::pin(async move { writer.write(msg.0).await })
    }
}

/// Number of members (for tests and metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct MemberCount;

impl Handler<MemberCount> for Room {
    type Result = usize;
    fn handle(&mut self, _: MemberCount, _: &mut Self::Context) -> usize {
        self.members.len()
    }
}
