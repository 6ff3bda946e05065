//! A deployment's replicas, their health, and least-outstanding-requests
//! selection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// What the health checker last concluded about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (or no probe has concluded). Routable, so static
    /// replicas serve before the first probe and without any checker, but
    /// not counted as ready: readiness is only ever proven by a probe.
    Unknown,
    /// The last probe succeeded.
    Ready,
    /// Probes failed (see [`crate::health`] for how many it takes). Not
    /// routed to while any other replica of the set is routable.
    Unready,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Ready,
            2 => Health::Unready,
            _ => Health::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Ready => 1,
            Health::Unready => 2,
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

    fn with_health(addr: SocketAddr, health: Health) -> Self {
        Self {
            addr,
            outstanding: AtomicU32::new(0),
            served: AtomicU64::new(0),
            health: AtomicU8::new(health.as_u8()),
            failures: AtomicU32::new(0),
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

    /// Whether requests may be sent to it: anything but known unready.
    pub fn is_routable(&self) -> bool {
        self.health() != Health::Unready
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

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts a request routed to it (not a retry).
    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes it out of routing after a failed connection, at once: only a
    /// passing probe brings it back, so a dead replica is not tried again
    /// by every request until the next probe.
    pub fn mark_unreachable(&self) {
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
    pub(crate) fn record_probe(&self, ok: bool, failure_threshold: u32) -> Option<Health> {
        let old = self.health();
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
        self.claim_any(limit, fastrand::usize(..n))
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

    /// The first routable replica with a free slot, scanning from `start`
    /// (random, so that the scan does not favour the set's first replicas).
    fn claim_any(&self, limit: u32, start: usize) -> Option<&Arc<Replica>> {
        let n = self.replicas.len();
        (0..n)
            .map(|i| &self.replicas[(start + i) % n])
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
        let n = self.replicas.len();
        let start = if n == 0 { 0 } else { fastrand::usize(..n) };
        (0..n)
            .map(|i| &self.replicas[(start + i) % n])
            .find(|r| !Arc::ptr_eq(r, not) && r.is_routable() && r.try_claim(limit))
    }
}

/// SplitMix64's finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: u32 = u32::MAX;

    fn set(n: u16) -> ReplicaSet {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        ReplicaSet::new(&addrs)
    }

    fn index(set: &ReplicaSet, r: &Arc<Replica>) -> usize {
        set.replicas()
            .iter()
            .position(|x| Arc::ptr_eq(x, r))
            .unwrap()
    }

    /// Marks replica `i` unready (it has never been ready, so one failure).
    fn fail(set: &ReplicaSet, i: usize) {
        set.replicas()[i].record_probe(false, 2);
        assert_eq!(set.replicas()[i].health(), Health::Unready);
    }

    fn outstanding(set: &ReplicaSet) -> Vec<u32> {
        set.replicas().iter().map(|r| r.outstanding()).collect()
    }

    #[test]
    fn empty_set_has_nothing_to_claim() {
        assert!(set(0).claim(NO_LIMIT).is_none());
    }

    #[test]
    fn claims_count_until_released() {
        let set = set(1);
        let r = Arc::clone(set.claim(NO_LIMIT).unwrap());
        set.claim(NO_LIMIT).unwrap();
        assert_eq!(r.outstanding(), 2);
        r.release();
        assert_eq!(r.outstanding(), 1);
    }

    #[test]
    fn two_choices_never_pick_the_busier_of_two() {
        let set = set(2);
        let busy = index(&set, set.claim(NO_LIMIT).unwrap());
        for _ in 0..100 {
            let r = set.claim(NO_LIMIT).unwrap();
            assert_ne!(
                index(&set, r),
                busy,
                "picked the replica with more in flight"
            );
            r.release();
        }
    }

    #[test]
    fn load_spreads_evenly_over_many_replicas() {
        let set = set(8);
        (0..800).for_each(|_| {
            set.claim(NO_LIMIT).unwrap();
        });
        let counts = outstanding(&set);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // With two choices the spread stays within a few requests: over
        // 20,000 runs the gap was at most 8. Random choice would leave gaps
        // of 25 and more.
        assert!(max - min <= 8, "uneven spread: {counts:?}");
    }

    #[test]
    fn the_limit_is_never_exceeded_and_every_slot_is_used() {
        let set = set(3);
        let claimed = (0..100).filter(|_| set.claim(2).is_some()).count();
        assert_eq!(claimed, 6, "3 replicas x 2 slots");
        assert_eq!(outstanding(&set), [2, 2, 2]);
        set.replicas()[1].release();
        let r = set.claim(2).expect("the freed slot");
        assert_eq!(index(&set, r), 1);
        assert!(set.claim(2).is_none());
    }

    #[test]
    fn concurrent_claims_respect_the_limit() {
        let set = Arc::new(set(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let set = Arc::clone(&set);
                std::thread::spawn(move || (0..1000).filter(|_| set.claim(3).is_some()).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 12);
        assert_eq!(outstanding(&set), [3, 3, 3, 3]);
    }

    #[test]
    fn new_replicas_are_routable_but_not_ready() {
        let set = set(3);
        assert!(set.replicas().iter().all(|r| r.health() == Health::Unknown));
        assert_eq!(set.routable_count(), 3);
        assert_eq!(set.ready_count(), 0);
        assert_eq!(set.probed_count(), 0);
        let ready = Replica::ready("127.0.0.1:1".parse().unwrap());
        assert_eq!(ready.health(), Health::Ready);
    }

    #[test]
    fn probes_drive_health_with_hysteresis_only_once_ready() {
        let set = set(1);
        let r = &set.replicas()[0];
        // Never ready: the first failure is enough.
        assert_eq!(r.record_probe(false, 2), Some(Health::Unready));
        assert_eq!(r.record_probe(false, 2), None);
        // One success makes it ready.
        assert_eq!(r.record_probe(true, 2), Some(Health::Ready));
        // Once ready, it takes `threshold` consecutive failures.
        assert_eq!(r.record_probe(false, 2), None);
        assert_eq!(r.health(), Health::Ready);
        assert_eq!(r.record_probe(true, 2), None, "a success resets the count");
        assert_eq!(r.record_probe(false, 2), None);
        assert_eq!(r.record_probe(false, 2), Some(Health::Unready));
        assert_eq!(r.record_probe(true, 2), Some(Health::Ready));
        // A threshold of one reacts at once.
        assert_eq!(r.record_probe(false, 1), Some(Health::Unready));
    }

    #[test]
    fn an_unreachable_replica_leaves_routing_until_a_probe_passes() {
        let set = set(2);
        set.replicas()[0].record_probe(true, 2);
        set.replicas()[0].mark_unreachable();
        for _ in 0..50 {
            let r = set.claim(NO_LIMIT).unwrap();
            assert_eq!(index(&set, r), 1);
        }
        set.replicas()[0].record_probe(true, 2);
        assert_eq!(set.routable_count(), 2);
    }

    #[test]
    fn counts_follow_health() {
        let set = set(3);
        set.replicas()[0].record_probe(true, 2);
        set.replicas()[1].record_probe(true, 2);
        fail(&set, 2);
        assert_eq!(set.ready_count(), 2);
        assert_eq!(set.routable_count(), 2);
        assert_eq!(set.probed_count(), 3);
    }

    #[test]
    fn claims_skip_unready_replicas() {
        let set = set(3);
        fail(&set, 0);
        fail(&set, 2);
        for _ in 0..100 {
            assert_eq!(index(&set, set.claim(NO_LIMIT).unwrap()), 1);
        }
        fail(&set, 1);
        assert!(set.claim(NO_LIMIT).is_none(), "all unready");
    }

    #[test]
    fn load_spreads_evenly_over_the_routable_replicas() {
        let set = set(8);
        for i in [1, 2, 5, 6] {
            fail(&set, i);
        }
        (0..400).for_each(|_| {
            set.claim(NO_LIMIT).unwrap();
        });
        let counts = outstanding(&set);
        for i in [1, 2, 5, 6] {
            assert_eq!(counts[i], 0, "unready replica picked: {counts:?}");
        }
        let routable: Vec<u32> = [0, 3, 4, 7].iter().map(|&i| counts[i]).collect();
        let (min, max) = (
            routable.iter().min().unwrap(),
            routable.iter().max().unwrap(),
        );
        assert!(max - min <= 8, "uneven spread: {counts:?}");
    }

    #[test]
    fn retries_claim_another_routable_replica() {
        let set = set(3);
        fail(&set, 1);
        let first = Arc::clone(&set.replicas()[0]);
        for _ in 0..20 {
            let other = set.claim_other(NO_LIMIT, &first).unwrap();
            assert_eq!(index(&set, other), 2);
        }
        fail(&set, 2);
        assert!(set.claim_other(NO_LIMIT, &first).is_none());
    }

    #[test]
    fn sets_change_by_sharing_replicas() {
        let set = set(2);
        let kept = Arc::clone(&set.replicas()[1]);
        kept.try_claim(NO_LIMIT);
        let smaller = set.without(&set.replicas()[0]);
        assert_eq!(smaller.len(), 1);
        assert_eq!(smaller.replicas()[0].outstanding(), 1, "state carried over");
        let bigger = smaller.with(Arc::new(Replica::ready("127.0.0.1:1".parse().unwrap())));
        assert_eq!(bigger.len(), 2);
        assert_eq!(bigger.ready_count(), 1);
    }

    #[test]
    fn sessions_map_to_one_replica_and_few_move_when_one_joins() {
        let four = set(4);
        let five = four.with(Arc::new(Replica::new("127.0.0.1:9100".parse().unwrap())));
        let home = |set: &ReplicaSet, key: u64| {
            let r = set.claim_affine(u32::MAX, key).unwrap();
            r.release();
            r.addr()
        };
        let mut moved = 0;
        for key in 0..1000u64 {
            let key = mix(key);
            assert_eq!(home(&four, key), home(&four, key), "stable");
            if home(&four, key) != home(&five, key) {
                moved += 1;
                assert_eq!(home(&five, key).port(), 9100, "only to the new replica");
            }
        }
        // About a fifth move, to the new replica; none between old ones.
        assert!((120..280).contains(&moved), "{moved}");
        let full = set(1);
        assert!(full.claim_affine(1, 7).is_some());
        assert!(full.claim_affine(1, 7).is_none(), "its replica is full");
    }
}
