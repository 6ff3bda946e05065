//! A request's claim on one replica slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Pool;
use crate::replicas::Replica;

/// A request's claim on one replica slot; gives the slot back when dropped,
/// whatever path the request ends on, and hands it to a parked request.
#[derive(Debug)]
pub struct Lease {
    pub(super) pool: Arc<Pool>,
    pub(super) replica: Arc<Replica>,
}

impl Lease {
    /// The leased replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.release();
        if self.pool.parked.load(Ordering::SeqCst) > 0 {
            self.pool.dispatch();
        }
    }
}
