//! A deployment's replicas and least-outstanding-requests selection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// One replica and the requests the gateway has in flight to it.
#[derive(Debug)]
pub struct Replica {
    addr: SocketAddr,
    outstanding: AtomicU32,
}

impl Replica {
    /// Where the replica listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests currently in flight to it through this gateway.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// The replicas of one deployment. Shared (`Arc`) between snapshots so that
/// in-flight counts survive a config reload.
#[derive(Debug)]
pub struct ReplicaSet {
    replicas: Box<[Replica]>,
}

impl ReplicaSet {
    /// A set of replicas at these addresses.
    pub fn new(addrs: &[SocketAddr]) -> Self {
        let replicas = addrs
            .iter()
            .map(|&addr| Replica {
                addr,
                outstanding: AtomicU32::new(0),
            })
            .collect();
        Self { replicas }
    }

    /// The replicas, in config order.
    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// Whether both sets hold the same addresses in the same order.
    pub fn same_addresses(&self, addrs: &[SocketAddr]) -> bool {
        self.replicas.len() == addrs.len()
            && self.replicas.iter().zip(addrs).all(|(r, a)| r.addr == *a)
    }

    /// Leases the less busy of two random replicas (power of two choices):
    /// nearly as good as scanning for the least busy one, at constant cost,
    /// and it avoids the herd that "always the least busy" causes when
    /// counts are read concurrently. `None` when there is no replica.
    pub fn pick(self: &Arc<Self>) -> Option<ReplicaLease> {
        let n = self.replicas.len();
        let index = match n {
            0 => return None,
            1 => 0,
            _ => {
                let a = fastrand::usize(..n);
                // A second, distinct index.
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                if self.replicas[b].outstanding() < self.replicas[a].outstanding() {
                    b
                } else {
                    a
                }
            }
        };
        self.replicas[index]
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        Some(ReplicaLease {
            set: Arc::clone(self),
            index,
        })
    }
}

/// A request's claim on one replica; releases it when dropped, whatever
/// path the request ends on.
#[derive(Debug)]
pub struct ReplicaLease {
    set: Arc<ReplicaSet>,
    index: usize,
}

impl ReplicaLease {
    /// The leased replica.
    pub fn replica(&self) -> &Replica {
        &self.set.replicas[self.index]
    }

    /// How many replicas the leased one's deployment has.
    pub fn set_len(&self) -> usize {
        self.set.replicas.len()
    }

    /// A lease on the following replica (in config order), for a retry
    /// after this one could not be reached. Releases nothing: drop `self`.
    pub fn next(&self) -> ReplicaLease {
        let index = (self.index + 1) % self.set.replicas.len();
        self.set.replicas[index]
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        ReplicaLease {
            set: Arc::clone(&self.set),
            index,
        }
    }
}

impl Drop for ReplicaLease {
    fn drop(&mut self) {
        self.replica().outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16) -> Arc<ReplicaSet> {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        Arc::new(ReplicaSet::new(&addrs))
    }

    #[test]
    fn empty_set_has_no_pick() {
        assert!(set(0).pick().is_none());
    }

    #[test]
    fn leases_count_outstanding_requests_until_dropped() {
        let set = set(1);
        let a = set.pick().unwrap();
        let b = set.pick().unwrap();
        assert_eq!(set.replicas()[0].outstanding(), 2);
        drop(a);
        assert_eq!(set.replicas()[0].outstanding(), 1);
        drop(b);
        assert_eq!(set.replicas()[0].outstanding(), 0);
    }

    #[test]
    fn two_choices_never_pick_the_busier_of_two() {
        let set = set(2);
        let busy = set.pick().unwrap();
        let busy_index = busy.index;
        for _ in 0..100 {
            let lease = set.pick().unwrap();
            assert_ne!(
                lease.index, busy_index,
                "picked the replica with more in flight"
            );
        }
    }

    #[test]
    fn load_spreads_evenly_over_many_replicas() {
        let set = set(8);
        let leases: Vec<_> = (0..800).map(|_| set.pick().unwrap()).collect();
        let counts: Vec<u32> = set.replicas().iter().map(Replica::outstanding).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // With two choices the spread stays within a few requests.
        assert!(max - min <= 4, "uneven spread: {counts:?}");
        drop(leases);
    }
}
