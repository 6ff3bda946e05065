//! Publishing snapshots: one atomic store per config change, one atomic load
//! per request, no lock on either side.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::snapshot::Snapshot;

/// The current routing snapshot, shared by the hot path and the control plane.
#[derive(Debug)]
pub struct Routing {
    current: ArcSwap<Snapshot>,
}

impl Routing {
    /// Starts publishing `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot. Cheap; do not hold it across an await.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for the control plane.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot in one atomic store: readers see the old one or
    /// the new one, never a mix.
    pub fn publish(&self, snapshot: Snapshot) {
        let parking = Arc::clone(snapshot.parking());
        self.current.store(Arc::new(snapshot));
        // The scaling controller reacts to the change now, not at its next tick.
        parking.activate();
    }
}
