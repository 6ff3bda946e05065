//! The global in-flight cap (`[server] max_in_flight`). Every predict
//! request the process holds takes a place, parked ones included: a parked
//! request holds its head (and a small body) in memory while it waits, so
//! the per-deployment queues alone do not bound memory across many
//! deployments or HTTP/2 streams. Beyond the cap a request is refused at
//! once, before its body is read (503 with `Retry-After`, see
//! [`Reject::AtCapacity`](crate::reject::Reject::AtCapacity)): nothing was
//! sent to a replica, so the client may retry as is, and no replica or
//! canary is blamed.
//!
//! The places are the drain's own count ([`InFlight`]): one atomic add per
//! request, as before the cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shutdown::{InFlight, InFlightGuard};

/// At most `limit` requests in flight; the refusals beyond it, counted.
#[derive(Debug)]
pub struct InFlightCap {
    in_flight: Arc<InFlight>,
    limit: usize,
    refused: AtomicU64,
}

impl InFlightCap {
    /// A cap of `limit` places in `in_flight`'s count.
    pub fn new(in_flight: Arc<InFlight>, limit: usize) -> Self {
        Self {
            in_flight,
            limit,
            refused: AtomicU64::new(0),
        }
    }

    /// A place for one request until the guard drops; `None` at the cap
    /// (and the refusal is counted).
    pub fn admit(&self) -> Option<InFlightGuard> {
        let place = self.in_flight.try_enter(self.limit);
        if place.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        place
    }

    /// Counts a request the cap never refuses (health checks: an
    /// overloaded gateway is alive), so that the drain still waits for it.
    pub fn enter_uncapped(&self) -> InFlightGuard {
        self.in_flight.enter()
    }

    /// The cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests holding a place now.
    pub fn held(&self) -> usize {
        self.in_flight.get()
    }

    /// Requests refused at the cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_frees_with_the_guard() {
        let cap = InFlightCap::new(Arc::new(InFlight::default()), 2);
        let first = cap.admit().expect("first place");
        let _second = cap.admit().expect("second place");
        assert!(cap.admit().is_none(), "the third is over the cap");
        assert_eq!((cap.held(), cap.refused()), (2, 1));
        drop(first);
        assert!(cap.admit().is_some(), "a place freed");
        assert_eq!(cap.refused(), 1);
    }

    #[test]
    fn uncapped_requests_pass_the_cap_and_count_for_the_drain() {
        let in_flight = Arc::new(InFlight::default());
        let cap = InFlightCap::new(Arc::clone(&in_flight), 1);
        let _request = cap.admit().expect("a place");
        let _probe = cap.enter_uncapped();
        assert_eq!(in_flight.get(), 2);
        assert!(cap.admit().is_none());
        assert_eq!(in_flight.get(), 2, "a refusal leaves the count as it was");
    }
}
