//! The predict service's cap on client connections, below the process's
//! file-descriptor limit. At the cap a new connection is admitted by closing
//! the one that has been idle longest (waiting between requests, or still
//! waiting for its first head, as nginx reuses its oldest keep-alive
//! connection); a connection with a request in progress is never cut. When
//! every connection is busy, the new one is closed at once.

// A std mutex guards the table for one insert, remove or scan (once per
// connection, never per request), never across an await.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The connections of one predict service.
#[derive(Debug)]
pub struct ConnLimit {
    limit: usize,
    /// Open connections by id.
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
    /// Ids, and the order in which connections fell idle.
    clock: AtomicU64,
    /// Connections closed to admit new ones.
    evicted: AtomicU64,
    /// Connections refused because every open one was busy.
    refused: AtomicU64,
}

/// One admitted connection's state, shared with the cap.
#[derive(Debug, Default)]
struct Slot {
    /// A request is in progress: the connection may not be closed.
    busy: AtomicBool,
    /// When (by the cap's clock) it last fell idle.
    idle_since: AtomicU64,
    /// Chosen to close; set once.
    evicting: AtomicBool,
    close: Notify,
}

/// An admitted connection: its place under the cap until dropped.
#[derive(Debug)]
pub struct Admitted {
    owner: Arc<ConnLimit>,
    id: u64,
    slot: Arc<Slot>,
}

impl ConnLimit {
    /// A cap of `limit` connections (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: Mutex::default(),
            clock: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits a new connection, closing the oldest idle one if the cap is
    /// reached; `None`: every open connection is busy, refuse this one.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.limit {
            // A scan, at the cap only: the idle connection idle longest.
            let idle = open
                .iter()
                .filter(|(_, slot)| !slot.busy.load(Ordering::Acquire))
                .min_by_key(|(_, slot)| slot.idle_since.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(slot) = open.remove(&id) {
                slot.evicting.store(true, Ordering::Release);
                // A stored permit: the connection sees it even if it is
                // not waiting yet.
                slot.close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = self.clock.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            idle_since: AtomicU64::new(id),
            ..Slot::default()
        });
        open.insert(id, Arc::clone(&slot));
        Some(Admitted {
            owner: Arc::clone(self),
            id,
            slot,
        })
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connections closed to admit new ones, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections refused at the cap, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Admitted {
    /// A request is in progress (`true`) or the connection waits for one.
    pub fn set_busy(&self, busy: bool) {
        if !busy {
            let now = self.owner.clock.fetch_add(1, Ordering::Relaxed);
            self.slot.idle_since.store(now, Ordering::Relaxed);
        }
        self.slot.busy.store(busy, Ordering::Release);
    }

    /// Waits on `next` (the connection's next request) as an idle
    /// connection, which the cap may close: `None` when it did. Marked busy
    /// again once `next` resolves.
    pub async fn while_idle<F: Future>(&self, next: F) -> Option<F::Output> {
        self.set_busy(false);
        let outcome = tokio::select! {
            biased;
            outcome = next => Some(outcome),
            () = self.evicted() => None,
        };
        self.set_busy(true);
        outcome
    }

    /// Resolves when the cap closes this connection to admit another.
    pub async fn evicted(&self) {
        self.slot.close.notified().await;
    }

    /// Whether the cap chose this connection to close: an eviction that
    /// raced with a new request's head still closes the connection, after
    /// that request.
    pub fn is_evicted(&self) -> bool {
        self.slot.evicting.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let cap = ConnLimit::new(2);
        let first = cap.admit().unwrap();
        let second = cap.admit().unwrap();
        // `first` served a request after `second` came: `second` has been
        // idle longer.
        first.set_busy(true);
        first.set_busy(false);
        let third = cap.admit().expect("the idle second connection makes room");
        assert!(second.is_evicted() && !first.is_evicted());
        first.set_busy(true);
        assert_eq!((cap.open(), cap.evicted()), (2, 1));
        third.set_busy(true);
        assert!(cap.admit().is_none(), "every connection is busy");
        assert_eq!(cap.refused(), 1);
        drop(first);
        assert_eq!(cap.open(), 1);
        assert!(cap.admit().is_some());
    }

    #[tokio::test]
    async fn an_evicted_connection_is_told() {
        let cap = ConnLimit::new(1);
        let old = cap.admit().unwrap();
        let _new = cap.admit().unwrap();
        // The permit was stored before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(5), old.evicted())
            .await
            .expect("the evicted connection is woken");
    }
}
