//! A deployment's replicas, their health, and which one takes a request:
//! the less busy of two picked at random (power of two choices), or, for a
//! session, the one its key maps to by rendezvous hashing while that one
//! has a slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::outlier::{self, Tracker};

/// What the health checker last concluded about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (or no probe has concluded). Routable, so static
    /// replicas serve before the first probe and without any checker, but
    /// not counted as ready: readiness is only ever proven by a probe.
    Unknown,
    /// The last probe succeeded.
    Ready,
    /// Probes failed (the health checker, `control::health`, says how many it takes). Not
    /// routed to while any other replica of the set is routable.
    Unready,
    /// Taken out of routing by what its traffic showed (see
    /// [`crate::outlier`]): until its backoff ends and a probe passes.
    Ejected,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Ready,
            2 => Health::Unready,
            3 => Health::Ejected,
            _ => Health::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Ready => 1,
            Health::Unready => 2,
            Health::Ejected => 3,
        }
    }
}

/// One replica, the requests the gateway has in flight to it, and its health.
#[derive(Debug)]
pub struct Replica {
    addr: SocketAddr,
    outstanding: AtomicU32,
    /// Requests routed to it (retries not counted), for usage records. On
    /// the cache line `outstanding` already dirties: no extra contention.
    served: AtomicU64,
    health: AtomicU8,
    /// Consecutive failed probes; only the health checker touches it.
    failures: AtomicU32,
    /// A hash of the address, for session affinity.
    key: u64,
    /// What its traffic has shown, for ejections.
    outlier: Tracker,
    /// Set once it is out of routing and someone waits for
    /// [`Replica::drained`]: only then does the last release ring `drained`.
    retiring: AtomicBool,
    drained: Notify,
    /// Run by another gateway of a fleet (this one routes to it).
    elsewhere: bool,
}

impl Replica {
    /// A replica at `addr` of unknown health: routable, not yet counted ready.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_health(addr, Health::Unknown)
    }

    /// A replica whose readiness probe has just passed.
    pub fn ready(addr: SocketAddr) -> Self {
        Self::with_health(addr, Health::Ready)
    }

    /// A ready replica that another gateway of the fleet runs: routed to
    /// like any other, its time metered by the gateway that runs it.
    pub fn elsewhere(addr: SocketAddr) -> Self {
        Self {
            elsewhere: true,
            ..Self::ready(addr)
        }
    }

    /// Whether another gateway of the fleet runs it.
    pub fn is_elsewhere(&self) -> bool {
        self.elsewhere
    }

    fn with_health(addr: SocketAddr, health: Health) -> Self {
        Self {
            addr,
            outstanding: AtomicU32::new(0),
            served: AtomicU64::new(0),
            health: AtomicU8::new(health.as_u8()),
            failures: AtomicU32::new(0),
            outlier: Tracker::default(),
            retiring: AtomicBool::new(false),
            drained: Notify::new(),
            elsewhere: false,
            key: mix(match addr.ip() {
                std::net::IpAddr::V4(ip) => u64::from(ip.to_bits()),
                std::net::IpAddr::V6(ip) => (ip.to_bits() as u64) ^ ((ip.to_bits() >> 64) as u64),
            } << 16
                | u64::from(addr.port())),
        }
    }

    /// Where the replica listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests currently in flight to it through this gateway.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Requests routed to it since it joined the set (retries excluded).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Its health as of the last probe.
    pub fn health(&self) -> Health {
        // Relaxed: the flag is a routing hint that publishes no other data.
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Whether requests may be sent to it: not yet probed, or ready.
    pub fn is_routable(&self) -> bool {
        matches!(self.health(), Health::Unknown | Health::Ready)
    }

    /// What its traffic has shown.
    pub(crate) fn outlier(&self) -> &Tracker {
        &self.outlier
    }

    /// Ejections in a row so far (see [`crate::outlier`]).
    pub fn ejections(&self) -> u32 {
        self.outlier.ejections()
    }

    /// The moving average of its answers' latency, once there is one.
    pub fn latency(&self) -> Option<std::time::Duration> {
        self.outlier.latency()
    }

    /// Takes it out of routing for an ejection (timed by its tracker).
    pub(crate) fn set_ejected(&self) {
        self.health
            .store(Health::Ejected.as_u8(), Ordering::Relaxed);
    }

    /// Takes one of its `limit` concurrency slots, if one is free. The
    /// check and the increment are one atomic step, so concurrent claims
    /// never push it past its limit.
    pub(crate) fn try_claim(&self, limit: u32) -> bool {
        // SeqCst pairs with the parked count in `Pool` (see `Pool::park`).
        self.outstanding
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a slot back; the last one of a retiring replica wakes
    /// [`drained`](Self::drained).
    pub(crate) fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1
            && self.retiring.load(Ordering::SeqCst)
        {
            self.drained.notify_waiters();
        }
    }

    /// Resolves once no request is in flight to it. For a replica already
    /// taken out of routing (nothing new claims it), so "no request" stays
    /// true. The flag and the count are both `SeqCst`, so of a release that
    /// empties it and this check at least one sees the other: either the
    /// release rings after the waiter listens, or the check sees zero.
    pub async fn drained(&self) {
        self.retiring.store(true, Ordering::SeqCst);
        loop {
            let notified = self.drained.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.outstanding() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a request routed to it (not a retry).
    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes it out of routing after a failed connection, at once: only a
    /// passing probe brings it back, so a dead replica is not tried again
    /// by every request until the next probe.
    pub fn mark_unreachable(&self) {
        if self.health() == Health::Ejected {
            // Out of routing already, for longer.
            return;
        }
        let old = self.health.swap(Health::Unready.as_u8(), Ordering::Relaxed);
        if old != Health::Unready.as_u8() {
            log::warn!(
                "replica {} is unreachable; out of routing until a probe passes",
                self.addr
            );
        }
    }

    /// Records one probe's outcome and returns the new health if it changed.
    ///
    /// One success makes it ready. A replica that was ready needs
    /// `failure_threshold` consecutive failures to become unready, so one
    /// lost probe does not pull a serving replica; one that has never been
    /// seen ready becomes unready at the first failure, since there is no
    /// evidence it can serve (e.g. still loading its model).
    ///
    /// An ejected replica stays ejected, whatever the probe says, until its
    /// backoff ends; then it is ready once a probe passes (and unready if
    /// one fails).
    pub fn record_probe(&self, ok: bool, failure_threshold: u32) -> Option<Health> {
        let old = self.health();
        if old == Health::Ejected && self.outlier.ejected_at(outlier::now_ms()) {
            return None;
        }
        let new = if ok {
            self.failures.store(0, Ordering::Relaxed);
            Health::Ready
        } else {
            // Load and store, not fetch_add: there is one writer, and this
            // way the count saturates instead of wrapping.
            let failures = self.failures.load(Ordering::Relaxed).saturating_add(1);
            self.failures.store(failures, Ordering::Relaxed);
            if old != Health::Ready || failures >= failure_threshold {
                Health::Unready
            } else {
                Health::Ready
            }
        };
        self.health.store(new.as_u8(), Ordering::Relaxed);
        (new != old).then_some(new)
    }
}

/// The replicas of one deployment at one moment. Immutable: a change makes
/// a new set that shares the `Arc<Replica>`s that stay, so their in-flight
/// counts and health carry over.
#[derive(Debug, Default)]
pub struct ReplicaSet {
    replicas: Box<[Arc<Replica>]>,
}

impl ReplicaSet {
    /// A set of new replicas at these addresses, all of unknown health.
    pub fn new(addrs: &[SocketAddr]) -> Self {
        Self::from_replicas(addrs.iter().map(|&a| Arc::new(Replica::new(a))).collect())
    }

    /// A set of these replicas.
    pub fn from_replicas(replicas: Vec<Arc<Replica>>) -> Self {
        Self {
            replicas: replicas.into_boxed_slice(),
        }
    }

    /// The replicas, in the order they joined.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// How many replicas it holds.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// This set with `replica` added at the end.
    pub fn with(&self, replica: Arc<Replica>) -> Self {
        let mut all = self.replicas.to_vec();
        all.push(replica);
        Self::from_replicas(all)
    }

    /// This set without `replica` (compared by identity).
    pub fn without(&self, replica: &Arc<Replica>) -> Self {
        Self::from_replicas(
            self.replicas
                .iter()
                .filter(|r| !Arc::ptr_eq(r, replica))
                .cloned()
                .collect(),
        )
    }

    /// Replicas whose last probe succeeded: what deployment status and
    /// promotion count. Replicas never probed do not count.
    pub fn ready_count(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.health() == Health::Ready)
            .count()
    }

    /// Ready replicas this gateway runs itself (or, for fixed replicas,
    /// all ready ones): what its usage records count.
    pub fn ready_here_count(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.health() == Health::Ready && !r.is_elsewhere())
            .count()
    }

    /// Replicas that some probe has concluded about, ready or not: fewer
    /// than configured means the checker has not seen them all yet.
    pub fn probed_count(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.health() != Health::Unknown)
            .count()
    }

    /// Replicas [`claim`](Self::claim) may choose: ready or not yet probed.
    pub fn routable_count(&self) -> usize {
        self.replicas.iter().filter(|r| r.is_routable()).count()
    }

    /// Requests routed to the set's replicas so far.
    pub fn served(&self) -> u64 {
        self.replicas.iter().map(|r| r.served()).sum()
    }

    /// Claims a concurrency slot (of `limit` per replica) on the less busy
    /// of two random routable replicas (power of two choices): nearly as
    /// good as scanning for the least busy one, at constant cost, and it
    /// avoids the herd that "always the least busy" causes when counts are
    /// read concurrently. When both are full, the first routable replica
    /// with a free slot. `None`: no routable replica has room, and the
    /// request must wait.
    pub fn claim(&self, limit: u32) -> Option<&Arc<Replica>> {
        let n = self.replicas.len();
        let (a, b) = match n {
            0 => return None,
            1 => (0, 0),
            _ => {
                let a = fastrand::usize(..n);
                // A second, distinct index.
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                (a, b)
            }
        };
        let (a, b) = if self.replicas[a].is_routable() && self.replicas[b].is_routable() {
            (a, b)
        } else {
            // Rare: draw again among the routable ones only. Skipping to the
            // next routable index instead would favour the replicas that
            // follow an unready one.
            self.draw_routable()?
        };
        let (a, b) = (&self.replicas[a], &self.replicas[b]);
        let (first, second) = if b.outstanding() < a.outstanding() {
            (b, a)
        } else {
            (a, b)
        };
        for r in [first, second] {
            if r.try_claim(limit) {
                return Some(r);
            }
        }
        self.claim_any(limit, None)
    }

    /// Two distinct routable indices drawn uniformly (the same one twice when
    /// only one is routable). Linear in the set size, without allocating.
    fn draw_routable(&self) -> Option<(usize, usize)> {
        match self.routable_count() {
            0 => None,
            1 => self.nth_routable(0).map(|i| (i, i)),
            r => {
                let a = fastrand::usize(..r);
                let b = (a + 1 + fastrand::usize(..r - 1)) % r;
                Some((self.nth_routable(a)?, self.nth_routable(b)?))
            }
        }
    }

    /// The index of the `k`th routable replica. Health may change between
    /// counting and this scan: then the last routable one, if any is left.
    fn nth_routable(&self, k: usize) -> Option<usize> {
        let mut last = None;
        for (seen, (i, _)) in self
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_routable())
            .enumerate()
        {
            if seen == k {
                return Some(i);
            }
            last = Some(i);
        }
        last
    }

    /// The first routable replica other than `skip` with a free slot,
    /// scanning from a random index (so that the scan does not favour the
    /// set's first replicas).
    fn claim_any(&self, limit: u32, skip: Option<&Arc<Replica>>) -> Option<&Arc<Replica>> {
        let n = self.replicas.len();
        let start = if n == 0 { 0 } else { fastrand::usize(..n) };
        (0..n)
            .map(|i| &self.replicas[(start + i) % n])
            .filter(|r| skip.is_none_or(|skip| !Arc::ptr_eq(r, skip)))
            .find(|r| r.is_routable() && r.try_claim(limit))
    }

    /// Claims a slot on the replica a session key maps to: the routable
    /// replica with the highest `mix(key ^ replica)` (rendezvous hashing,
    /// so a replica joining or leaving moves only the sessions it gains or
    /// had). `None` if that replica is full.
    pub fn claim_affine(&self, limit: u32, key: u64) -> Option<&Arc<Replica>> {
        let best = self
            .replicas
            .iter()
            .filter(|r| r.is_routable())
            .max_by_key(|r| mix(key ^ r.key))?;
        best.try_claim(limit).then_some(best)
    }

    /// Claims a slot on a routable replica other than `not` (for a retry
    /// after `not` could not be reached).
    pub fn claim_other(&self, limit: u32, not: &Arc<Replica>) -> Option<&Arc<Replica>> {
        self.claim_any(limit, Some(not))
    }
}

/// SplitMix64's finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
