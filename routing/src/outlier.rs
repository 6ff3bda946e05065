//! Outlier detection: what live traffic says about a replica. Each request
//! reports how its replica did (an answer and its latency, or a failure);
//! a replica that fails `consecutive_failures` requests in a row, or whose
//! average latency runs far above its peers', is ejected: out of routing
//! for a backoff that doubles with each ejection in a row, after which a
//! passing readiness probe brings it back (see [`Replica::record_probe`]).
//! Probes alone cannot see a replica that passes them but fails or stalls
//! its predictions; this can.
//!
//! The hot path pays a few relaxed atomics on the replica per request; the
//! decision to eject, which looks at the whole set, runs only once a
//! replica has failed often enough, and the latency comparison runs in the
//! health checker's rounds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use config::OutlierDetection;

use crate::replicas::{Health, Replica, ReplicaSet};

/// A latency average needs this many answers before it is compared.
const MIN_LATENCY_SAMPLES: u32 = 20;
/// Latencies within this of their peers' median are never outliers,
/// whatever the factor: below it the difference is noise.
const LATENCY_NOISE_FLOOR: Duration = Duration::from_millis(10);

/// Milliseconds since the process's first call: the clock ejections are
/// timed by (monotonic, and small enough for an atomic).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How a request failed at its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made, or broke before any response.
    Connect,
    /// A 5xx (other than an overloaded 503 with `Retry-After`).
    ServerError,
    /// No response within the upstream timeouts.
    Timeout,
    /// The response broke off.
    Cut,
}

/// Why a replica was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// `consecutive_failures` failures in a row.
    Failures,
    /// Its latency ran far above its peers'.
    Latency,
}

impl Ejection {
    pub const ALL: [Self; 2] = [Self::Failures, Self::Latency];

    /// The `reason` label of `igw_replica_ejections_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Latency => "latency",
        }
    }
}

/// What one replica's traffic has shown; lives in the [`Replica`].
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Failed requests since its last answer.
    consecutive_failures: AtomicU32,
    /// Ejections in a row: reset once it has stayed in routing for the
    /// longest ejection.
    ejections: AtomicU32,
    /// While ejected: when its backoff ends ([`now_ms`]); else 0.
    ejected_until: AtomicU64,
    /// When its last ejection began ([`now_ms`]).
    last_ejected: AtomicU64,
    /// Moving average of its answers' latency, in microseconds.
    latency_us: AtomicU64,
    /// Answers in that average (saturating at a small bound).
    latency_samples: AtomicU32,
}

impl Tracker {
    /// An answer (any status short of a counted failure) after `latency`.
    pub(crate) fn answered(&self, latency: Duration) {
        // Loads first: the common case writes nothing but the average.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let samples = self.latency_samples.load(Ordering::Relaxed);
        let old = self.latency_us.load(Ordering::Relaxed);
        // An exponential average with weight 1/8: a racing update may be
        // lost, which an average can afford.
        let new = if samples == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
        if samples < MIN_LATENCY_SAMPLES {
            self.latency_samples.store(samples + 1, Ordering::Relaxed);
        }
    }

    /// A failure; the failures in a row now.
    pub(crate) fn failed(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ejections in a row so far.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Its average latency, once enough answers make one.
    pub(crate) fn latency(&self) -> Option<Duration> {
        (self.latency_samples.load(Ordering::Relaxed) >= MIN_LATENCY_SAMPLES)
            .then(|| Duration::from_micros(self.latency_us.load(Ordering::Relaxed)))
    }

    /// Whether an ejection holds it out of routing at `now`.
    pub(crate) fn ejected_at(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Starts an ejection at `now`: its length doubles with each ejection
    /// in a row, up to `max_ejection`.
    fn eject(&self, settings: &OutlierDetection, now: u64) -> Duration {
        let max = settings.max_ejection;
        let quiet = now.saturating_sub(self.ejected_until.load(Ordering::Relaxed));
        let last = self.last_ejected.load(Ordering::Relaxed);
        let in_a_row = if last == 0 || Duration::from_millis(quiet) >= max {
            1
        } else {
            self.ejections.load(Ordering::Relaxed).saturating_add(1)
        };
        let length = settings
            .base_ejection
            .saturating_mul(1 << (in_a_row - 1).min(16))
            .min(max);
        self.ejections.store(in_a_row, Ordering::Relaxed);
        self.last_ejected.store(now.max(1), Ordering::Relaxed);
        let until = now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        // Its average starts over when it returns.
        self.latency_samples.store(0, Ordering::Relaxed);
        length
    }
}

/// Whether one more replica of `set` may be ejected: at most
/// `max_ejected_percent` of them at once (at least one, if the share
/// allows any), and never the last routable one.
fn may_eject(set: &ReplicaSet, settings: &OutlierDetection) -> bool {
    let ejected = set
        .replicas()
        .iter()
        .filter(|r| r.health() == Health::Ejected)
        .count();
    let share = set.len() * settings.max_ejected_percent as usize / 100;
    let allowed = if settings.max_ejected_percent == 0 {
        0
    } else {
        share.max(1)
    };
    ejected < allowed && set.routable_count() > 1
}

/// Ejects `replica` for `why`, if the set allows one more ejection; the
/// ejection's length if it did.
pub(crate) fn try_eject(
    set: &ReplicaSet,
    replica: &Replica,
    settings: &OutlierDetection,
    why: Ejection,
    now: u64,
) -> Option<Duration> {
    if replica.health() == Health::Ejected || !may_eject(set, settings) {
        return None;
    }
    let length = replica.outlier().eject(settings, now);
    replica.set_ejected();
    log::warn!(
        "replica {} ejected for {:?} ({}; ejection {} in a row)",
        replica.addr(),
        length,
        match why {
            Ejection::Failures => "failed requests in a row",
            Ejection::Latency => "latency far above its peers'",
        },
        replica.outlier().ejections()
    );
    Some(length)
}

/// After a failure on `replica`: whether its failures in a row now reach
/// the threshold.
pub(crate) fn failure_ejects(replica: &Replica, settings: &OutlierDetection) -> bool {
    let in_a_row = replica.outlier().failed();
    settings.consecutive_failures != 0 && in_a_row >= settings.consecutive_failures
}

/// The routable replicas of `set` whose average latency exceeds
/// `latency_factor` times the median of the others' (and that median by
/// more than the noise floor).
pub(crate) fn latency_outliers<'a>(
    set: &'a ReplicaSet,
    settings: &OutlierDetection,
) -> Vec<&'a Replica> {
    if settings.latency_factor == 0 {
        return Vec::new();
    }
    let measured: Vec<(&Replica, Duration)> = set
        .replicas()
        .iter()
        .filter(|r| r.is_routable())
        .filter_map(|r| Some((&**r, r.outlier().latency()?)))
        .collect();
    if measured.len() < 2 {
        return Vec::new();
    }
    measured
        .iter()
        .filter(|(replica, latency)| {
            let mut others: Vec<Duration> = measured
                .iter()
                .filter(|(r, _)| !std::ptr::eq(*r, *replica))
                .map(|(_, l)| *l)
                .collect();
            others.sort_unstable();
            let median = others[others.len() / 2];
            *latency > median.saturating_mul(settings.latency_factor)
                && latency.saturating_sub(median) > LATENCY_NOISE_FLOOR
        })
        .map(|(r, _)| *r)
        .collect()
}

#[cfg(test)]
mod tests;
