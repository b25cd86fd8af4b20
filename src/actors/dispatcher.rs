//! `Dispatcher`: starts rooms on demand, reaps idle ones, replaces dead ones.
//!
//! It is consulted when a session first needs its conversation's room; after that the
//! session talks to the room directly, so the dispatcher is never on the per-message path.
//! Rooms hold no state that PostgreSQL does not have, so "restarting" a failed room means
//! starting a fresh one on the next request: sessions notice a dead room (its mailbox is
//! closed) on their next send or heartbeat and join the new one.

use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use super::room::Room;
use crate::bus::RoomRegistry;
use crate::db::writer::MessageWriter;
use crate::metrics::Metrics;

pub struct Dispatcher {
    rooms: RoomRegistry,
    arbiters: Vec<ArbiterHandle>,
    next: usize,
    writer: MessageWriter,
    idle_after: Duration,
    metrics: Metrics,
}

impl Dispatcher {
    pub fn new(
        rooms: RoomRegistry,
        arbiters: Vec<ArbiterHandle>,
        writer: MessageWriter,
        idle_after: Duration,
        metrics: Metrics,
    ) -> Dispatcher {
        Dispatcher {
            rooms,
            arbiters,
            next: 0,
            writer,
            idle_after,
            metrics,
        }
    }

    fn start_room(&mut self, id: Uuid, me: Addr<Dispatcher>) -> Addr<Room> {
        let writer = self.writer.clone();
        let idle = self.idle_after;
        let make = move |_: &mut Context<Room>| Room::new(id, idle, me, writer);
        if self.arbiters.is_empty() {
            Room::create(make)
        } else {
            self.next = (self.next + 1) % self.arbiters.len();
            Room::start_in_arbiter(&self.arbiters[self.next], make)
        }
    }

    fn update_gauge(&self) {
        let n = self.rooms.read().map(|m| m.len()).unwrap_or(0);
        self.metrics.rooms_active.set(n as i64);
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Sweep rooms that died (a panic stops an actor without telling anyone).
        ctx.run_interval(Duration::from_secs(1), |d, _| {
            if let Ok(mut map) = d.rooms.write() {
                map.retain(|_, addr| addr.connected());
            }
            d.update_gauge();
        });
    }
}

/// The room of a conversation, started if needed.
#[derive(Message)]
#[rtype(result = "Addr<Room>")]
pub struct GetRoom {
    pub conversation_id: Uuid,
}

impl Handler<GetRoom> for Dispatcher {
    type Result = MessageResult<GetRoom>;
    fn handle(&mut self, msg: GetRoom, ctx: &mut Self::Context) -> Self::Result {
        let existing = self
            .rooms
            .read()
            .ok()
            .and_then(|m| m.get(&msg.conversation_id).cloned())
            .filter(|a| a.connected());
        if let Some(addr) = existing {
            return MessageResult(addr);
        }
        let addr = self.start_room(msg.conversation_id, ctx.address());
        if let Ok(mut map) = self.rooms.write() {
            map.insert(msg.conversation_id, addr.clone());
        }
        self.update_gauge();
        MessageResult(addr)
    }
}

/// An empty room asks to retire; true when it was forgotten and may stop.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RoomIdle {
    pub conversation_id: Uuid,
    pub addr: Addr<Room>,
}

impl Handler<RoomIdle> for Dispatcher {
    type Result = bool;
    fn handle(&mut self, msg: RoomIdle, _: &mut Self::Context) -> bool {
        let Ok(mut map) = self.rooms.write() else {
            return false;
        };
        match map.get(&msg.conversation_id) {
            Some(a) if *a == msg.addr => {
                map.remove(&msg.conversation_id);
                drop(map);
                self.update_gauge();
                true
            }
            // Not the registered room (already replaced): it may stop too.
            _ => true,
        }
    }
}
