//! The admin listener's connection slots: a probe or a scrape always finds one.
//!
//! Each connection holds a [`Slot`] from accept until it closes. When every slot is taken,
//! a new connection takes the slot of the oldest connection that is not serving a request
//! (one still sending its first request head, or waiting between requests, or writing an
//! answer it has finished): that one is closed at once. So idle sockets, however many and
//! however often renewed, cannot keep a load balancer's probe out. A connection is busy
//! while a request is in its handler ([`mark_busy`]) and while it streams the console's
//! live log, whose streams are capped on their own; only when every slot is busy is a new
//! connection refused, with a 503 written without waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The answer to a connection that finds every slot busy.
pub(crate) const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 70\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"Every admin connection is serving a request; retry shortly\"}";

/// The slot table: at most `cap` connections, oldest first.
pub(crate) struct Slots {
    cap: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: Vec<Entry>,
}

struct Entry {
    id: u64,
    busy: Busy,
    evict: CancellationToken,
}

/// How many requests (or live-log streams) a connection is serving; shared with its
/// requests as an extension.
#[derive(Clone, Default)]
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// Marks the connection busy until the guard is dropped.
    pub(crate) fn hold(&self) -> BusyGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// A connection's mark as busy; dropping it ends the mark.
pub(crate) struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's place; given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub(crate) busy: Busy,
    /// Cancelled when a newer connection took this slot: the connection ends at once.
    pub(crate) evicted: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table.lock().entries.retain(|e| e.id != self.id);
    }
}

impl Slots {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Slots {
            cap,
            table: Mutex::new(Table::default()),
        })
    }

    /// A slot for a new connection, taking the oldest idle one's when all are taken;
    /// `None` when every connection is busy.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.table.lock();
        if table.entries.len() >= self.cap {
            let oldest_idle = table.entries.iter().position(|e| e.busy.is_idle())?;
            let evicted = table.entries.remove(oldest_idle);
            evicted.evict.cancel();
        }
        table.next_id += 1;
        let id = table.next_id;
        let busy = Busy::default();
        let evicted = CancellationToken::new();
        table.entries.push(Entry {
            id,
            busy: busy.clone(),
            evict: evicted.clone(),
        });
        Some(Slot {
            slots: self.clone(),
            id,
            busy,
            evicted,
        })
    }
}

/// Middleware: the connection is busy while a request is in its handler.
pub(crate) async fn mark_busy(request: Request, next: Next) -> Response {
    let _busy = request.extensions().get::<Busy>().map(Busy::hold);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_gives_the_oldest_idle_slot_away_and_never_a_busy_one() {
        let slots = Slots::new(3);
        let a = slots.admit().expect("a");
        let b = slots.admit().expect("b");
        let c = slots.admit().expect("c");
        let _busy_a = a.busy.hold();
        let d = slots.admit().expect("d takes b's slot");
        assert!(!a.evicted.is_cancelled());
        assert!(b.evicted.is_cancelled());
        assert!(!c.evicted.is_cancelled());
        let _busy_c = c.busy.hold();
        let _busy_d = d.busy.hold();
        assert!(slots.admit().is_none(), "every slot busy");
        drop(b);
        assert!(
            slots.admit().is_none(),
            "an evicted slot is not counted twice"
        );
        drop(d);
        assert!(
            slots.admit().is_some(),
            "a closed connection frees its slot"
        );
    }
}
