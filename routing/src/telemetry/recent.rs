//! What a deployment or an environment served over the last minute, kept by
//! the gateway itself so the management API can summarise it without
//! Prometheus.
//!
//! A ring of [`SLOTS`] slots of [`SLOT`] each: a request is counted in the
//! slot of the moment it ended, with relaxed adds into fixed arrays. The
//! first request of a new period claims the slot (CAS of its tag to a
//! "clearing" mark), zeroes it and publishes the new tag; requests ending
//! in that same instant spin for those few hundred nanoseconds rather than
//! lose their count. The slots are allocated on a route's first request,
//! so idle models cost a pointer.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::buckets::{self, BUCKETS};

/// Length of one slot.
const SLOT: Duration = Duration::from_secs(5);
/// Slots in the ring: the current one and the [`WINDOW`] before it.
const SLOTS: usize = 13;
/// How far back a summary looks.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Tag of a slot being zeroed.
const CLEARING: u64 = u64::MAX;

/// One period's counts.
#[derive(Debug)]
struct Slot {
    /// Period number + 1 (0: never used).
    tag: AtomicU64,
    requests: AtomicU64,
    /// 4xx, including 499 (client left).
    client_errors: AtomicU64,
    /// 5xx, or no response at all.
    server_errors: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Self {
            tag: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Makes this slot count for `tag`, zeroing what an older period left.
    fn claim(&self, tag: u64) {
        loop {
            let seen = self.tag.load(Ordering::Acquire);
            if seen == tag {
                return;
            }
            if seen == CLEARING {
                // Another request is zeroing it: a few hundred nanoseconds.
                std::hint::spin_loop();
                continue;
            }
            if seen > tag {
                // So late that its period was recycled: it counts in the
                // newer one, off by a slot rather than lost.
                return;
            }
            if self
                .tag
                .compare_exchange(seen, CLEARING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.requests.store(0, Ordering::Relaxed);
                self.client_errors.store(0, Ordering::Relaxed);
                self.server_errors.store(0, Ordering::Relaxed);
                for b in &self.latency {
                    b.store(0, Ordering::Relaxed);
                }
                self.tag.store(tag, Ordering::Release);
                return;
            }
        }
    }
}

/// A deployment's or an environment's last minute.
#[derive(Debug)]
pub struct RecentStats {
    slots: OnceLock<Box<[Slot]>>,
    created: Instant,
}

impl Default for RecentStats {
    fn default() -> Self {
        Self {
            slots: OnceLock::new(),
            created: Instant::now(),
        }
    }
}

/// A summary of the last [`WINDOW`] (or less, for stats younger than that).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecentSummary {
    /// Seconds the summary covers.
    pub window: Duration,
    /// Requests that ended in it.
    pub requests: u64,
    /// 4xx among them (including 499, client left).
    pub client_errors: u64,
    /// 5xx among them, or no response.
    pub server_errors: u64,
    /// Latency quantiles (upper bound of the bucket, at most 19% above).
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl RecentSummary {
    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        per_second(self.requests, self.window)
    }

    /// Share of requests that were server errors.
    pub fn error_rate(&self) -> f64 {
        ratio(self.server_errors, self.requests)
    }
}

fn per_second(n: u64, window: Duration) -> f64 {
    if window.is_zero() {
        0.0
    } else {
        n as f64 / window.as_secs_f64()
    }
}

fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// Where periods are counted from: the first use in this process.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Period number of an instant.
fn period(at: Instant) -> u64 {
    (at.saturating_duration_since(origin()).as_nanos() / SLOT.as_nanos()) as u64
}

impl RecentStats {
    fn slots(&self) -> &[Slot] {
        self.slots
            .get_or_init(|| (0..SLOTS).map(|_| Slot::new()).collect())
    }

    /// Counts a request that ended at `at` with `status` (0: no response).
    pub fn record(&self, at: Instant, status: u16, latency: Duration) {
        let n = period(at);
        let slot = &self.slots()[n as usize % SLOTS];
        slot.claim(n + 1);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => {
                slot.client_errors.fetch_add(1, Ordering::Relaxed);
            }
            0 | 500.. => {
                slot.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        slot.latency[buckets::bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last [`WINDOW`] as of `now`.
    pub fn summary(&self, now: Instant) -> RecentSummary {
        let current = period(now);
        let oldest = current.saturating_sub((WINDOW.as_nanos() / SLOT.as_nanos()) as u64);
        let mut counts = [0u64; BUCKETS];
        let (mut requests, mut client_errors, mut server_errors) = (0, 0, 0);
        if let Some(slots) = self.slots.get() {
            for slot in slots.iter() {
                let tag = slot.tag.load(Ordering::Acquire);
                if tag == 0 || tag == CLEARING || !(oldest + 1..=current + 1).contains(&tag) {
                    continue;
                }
                requests += slot.requests.load(Ordering::Relaxed);
                client_errors += slot.client_errors.load(Ordering::Relaxed);
                server_errors += slot.server_errors.load(Ordering::Relaxed);
                for (sum, b) in counts.iter_mut().zip(&slot.latency) {
                    *sum += u64::from(b.load(Ordering::Relaxed));
                }
            }
        }
        // The oldest slot counts whole: the window runs from its start, or
        // from when these stats began if that is later.
        let oldest_start = origin() + SLOT * u32::try_from(oldest).unwrap_or(u32::MAX);
        let window = now.saturating_duration_since(oldest_start.max(self.created));
        RecentSummary {
            window,
            requests,
            client_errors,
            server_errors,
            p50: buckets::quantile(&counts, 0.50),
            p90: buckets::quantile(&counts, 0.90),
            p99: buckets::quantile(&counts, 0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_summary_counts_the_last_minute_only() {
        let stats = RecentStats::default();
        for status in [200, 200, 404, 503] {
            stats.record(Instant::now(), status, 10 * MS);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        stats.record(Instant::now(), 200, 100 * MS);
        let s = stats.summary(Instant::now());
        assert_eq!(
            (s.requests, s.client_errors, s.server_errors),
            (5, 1, 1),
            "{s:?}"
        );
        assert!((s.error_rate() - 0.2).abs() < 1e-9);
        assert!(s.p50 >= 10 * MS && s.p50 < 12 * MS, "{s:?}");
        assert!(s.p99 >= 100 * MS && s.p99 < 120 * MS, "{s:?}");
        assert!(s.window >= Duration::from_secs(30) && s.window <= WINDOW + SLOT);

        // 70 s after the first four, only the fifth is left; 40 s later none.
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(stats.summary(Instant::now()).requests, 1);
        tokio::time::advance(Duration::from_secs(40)).await;
        let s = stats.summary(Instant::now());
        assert_eq!((s.requests, s.p99), (0, Duration::ZERO));
        assert!(s.window >= WINDOW && s.window <= WINDOW + SLOT, "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_recycled_slot_starts_from_zero() {
        let stats = RecentStats::default();
        stats.record(Instant::now(), 500, MS);
        // The same slot of the ring, one whole turn later.
        tokio::time::advance(SLOT * SLOTS as u32).await;
        stats.record(Instant::now(), 200, MS);
        let s = stats.summary(Instant::now());
        assert_eq!((s.requests, s.server_errors), (1, 0), "{s:?}");
    }

    #[test]
    fn concurrent_requests_at_a_slot_change_are_all_counted() {
        let stats = std::sync::Arc::new(RecentStats::default());
        let at = Instant::now() + SLOT * 3;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = std::sync::Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        stats.record(at, 200, MS);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        assert_eq!(stats.summary(at).requests, 80_000);
    }
}
