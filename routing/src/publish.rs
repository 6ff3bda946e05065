//! Publishing snapshots: one atomic store per config change, one atomic load
//! per request, no lock on either side.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::snapshot::{Effect, Snapshot, Update};

/// The current routing snapshot, shared by the hot path and the control plane.
#[derive(Debug)]
pub struct Routing {
    current: ArcSwap<Snapshot>,
    /// Rung after each publish, for control-plane loops that wait for a
    /// new config (the hot path never touches it).
    published: watch::Sender<()>,
}

impl Routing {
    /// Starts publishing `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            published: watch::Sender::new(()),
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

    /// A watch whose `changed()` resolves after the next publish (and each
    /// one after that), however soon it comes.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.published.subscribe()
    }

    /// Replaces the snapshot in one atomic store (readers see the old one or
    /// the new one, never a mix), applying the update's effects around it:
    /// the kept pools' settings and replicas and the parked-bytes budget
    /// before, so the new snapshot never routes to a pool still set up the
    /// old way; closing the pools of deactivated or deleted deployments
    /// after, once no new request can be routed to them. Then wakes the
    /// scaling controller to react now, not at its next tick, and whoever
    /// [subscribed](Self::subscribe).
    pub fn publish(&self, update: Update) {
        let (snapshot, effects) = update.into_parts();
        let (after, before): (Vec<Effect>, Vec<Effect>) =
            effects.into_iter().partition(Effect::after_store);
        before.into_iter().for_each(Effect::apply);
        let scale_signal = Arc::clone(snapshot.scale_signal());
        self.current.store(Arc::new(snapshot));
        after.into_iter().for_each(Effect::apply);
        scale_signal.notify_controller();
        self.published.send_replace(());
    }
}
