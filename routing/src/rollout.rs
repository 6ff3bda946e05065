//! Canary rollouts on the hot path: which stage a rollout is in (a pure
//! function of its persisted start time and duration, so every gateway
//! reading the same config agrees, and a restarted one resumes where it
//! was), which side each request goes to, and what each side's requests
//! did (for the automatic rollback).
//!
//! The split is smooth and deterministic, not a coin flip: request
//! `i` goes to the canary iff `floor((i + 1) p / 100) > floor(i p / 100)`
//! at `p` percent, so any `n` consecutive requests send `floor(n p / 100)`
//! or one more to the canary: within one of the exact share in every
//! window, not only on average.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::buckets;

/// How many equal stages a rollout moves traffic in.
pub const STAGES: u32 = 10;

/// Where a rollout stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stage `k` of [`STAGES`] (1-based): `10 k` percent to the canary.
    Stage(u32),
    /// The whole duration has passed: all traffic to the canary.
    Complete,
}

impl Phase {
    /// The phase `elapsed_ms` after the start of a rollout lasting
    /// `duration_ms`: stage k spans `[(k-1) d / 10, k d / 10)`.
    pub fn at(elapsed_ms: u64, duration_ms: u64) -> Self {
        if elapsed_ms >= duration_ms {
            return Phase::Complete;
        }
        let stage =
            (u128::from(elapsed_ms) * u128::from(STAGES) / u128::from(duration_ms.max(1))) as u32;
        Phase::Stage(stage + 1)
    }

    /// The phase of a persisted rollout at `now_ms` (Unix milliseconds).
    pub fn of(rollout: &config::Rollout, now_ms: u64) -> Self {
        Self::at(
            now_ms.saturating_sub(rollout.started_at_ms),
            u64::try_from(rollout.duration.as_millis()).unwrap_or(u64::MAX),
        )
    }

    /// Percent of requests that go to the canary.
    pub fn percent(self) -> u32 {
        match self {
            Phase::Stage(k) => k * (100 / STAGES),
            Phase::Complete => 100,
        }
    }
}

/// Milliseconds since the Unix epoch, the unit rollouts are persisted in.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which deployment of a rollout a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The environment's current deployment.
    Stable,
    /// The deployment being rolled out.
    Canary,
}

/// A rollout's state that must outlive snapshots: the split's position and
/// the statistics the rollback guard reads.
#[derive(Debug, Default)]
pub struct RolloutState {
    split: SmoothSplit,
    stats: RolloutStats,
}

impl RolloutState {
    /// The split between its two sides.
    pub fn split(&self) -> &SmoothSplit {
        &self.split
    }

    /// Both sides' statistics over the current stage.
    pub fn stats(&self) -> &RolloutStats {
        &self.stats
    }
}

/// A smooth weighted split between the two sides of a rollout: one counter
/// per rollout, request `i` going to the canary as the module doc says.
#[derive(Debug, Default)]
pub struct SmoothSplit {
    next: AtomicU64,
}

impl SmoothSplit {
    /// The side of the next request at `percent` to the canary.
    pub fn next(&self, percent: u32) -> Side {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if canary_at(i, percent) {
            Side::Canary
        } else {
            Side::Stable
        }
    }
}

/// Whether request number `i` goes to the canary at `percent`.
fn canary_at(i: u64, percent: u32) -> bool {
    let p = u128::from(percent.min(100));
    let i = u128::from(i);
    (i + 1) * p / 100 > i * p / 100
}

/// The side a session sticks to at `percent`: the same one for the whole
/// rollout once it reached the canary, since the share only grows.
pub fn sticky_side(session_hash: u64, percent: u32) -> Side {
    if session_hash % 100 < u64::from(percent) {
        Side::Canary
    } else {
        Side::Stable
    }
}

/// Requests, server errors and latencies of one side, since the stage began.
#[derive(Debug)]
pub struct SideStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; buckets::BUCKETS],
}

impl Default for SideStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// What one side did over a stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SideSummary {
    /// Requests that ended.
    pub requests: u64,
    /// Share of them that failed (5xx, or no response).
    pub error_rate: f64,
    /// 99th percentile latency (bucket upper bound).
    pub p99: Duration,
}

impl SideStats {
    fn record(&self, failed: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[buckets::bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for b in &self.latency {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Requests, error rate and p99 so far.
    pub fn summary(&self) -> SideSummary {
        self.counts().summary()
    }

    /// The raw counts so far.
    pub fn counts(&self) -> SideCounts {
        SideCounts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// One side's raw counts: what gateways of a fleet publish, and what adds
/// up across them (a p99 does not; its latency buckets do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideCounts {
    /// Requests that ended.
    pub requests: u64,
    /// Of them, failed (5xx, or no response).
    pub errors: u64,
    /// Requests per latency bucket.
    pub latency: Vec<u64>,
}

impl SideCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &SideCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// Requests, error rate and p99 of these counts.
    pub fn summary(&self) -> SideSummary {
        SideSummary {
            requests: self.requests,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            p99: buckets::quantile(&self.latency, 0.99),
        }
    }
}

/// Both sides' statistics over the current stage.
#[derive(Debug, Default)]
pub struct RolloutStats {
    stage: AtomicU32,
    stable: SideStats,
    canary: SideStats,
}

impl RolloutStats {
    /// Records one finished request.
    pub fn record(&self, side: Side, failed: bool, latency: Duration) {
        match side {
            Side::Stable => self.stable.record(failed, latency),
            Side::Canary => self.canary.record(failed, latency),
        }
    }

    /// Starts counting afresh when the stage changes (the guard compares
    /// sides over the current stage only). Returns whether it changed.
    pub fn enter_stage(&self, stage: u32) -> bool {
        if self.stage.swap(stage, Ordering::Relaxed) == stage {
            return false;
        }
        self.stable.reset();
        self.canary.reset();
        true
    }

    /// (stable, canary) so far in this stage.
    pub fn summaries(&self) -> (SideSummary, SideSummary) {
        (self.stable.summary(), self.canary.summary())
    }

    /// The stage these statistics are of, and (stable, canary)'s raw
    /// counts in it.
    pub fn counts(&self) -> (u32, SideCounts, SideCounts) {
        (
            self.stage.load(Ordering::Relaxed),
            self.stable.counts(),
            self.canary.counts(),
        )
    }
}

/// Why the guard rolls a canary back, with the figures that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// The canary's error rate rose more than allowed.
    ErrorRate(String),
    /// The canary's p99 latency rose more than allowed.
    Latency(String),
}

impl Rollback {
    /// The cause as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ErrorRate(_) => "error_rate",
            Self::Latency(_) => "latency",
        }
    }
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ErrorRate(why) | Self::Latency(why) => f.write_str(why),
        }
    }
}

/// The guard's verdict: why the canary must be rolled back, if it must.
pub fn rollback_reason(
    guard: &config::RollbackGuard,
    stable: &SideSummary,
    canary: &SideSummary,
) -> Option<Rollback> {
    if canary.requests < u64::from(guard.min_requests) {
        return None;
    }
    if canary.error_rate > stable.error_rate + guard.max_error_rate_increase {
        return Some(Rollback::ErrorRate(format!(
            "error rate {:.1}% on the new deployment vs {:.1}% on the old one over {} and {} requests (allowed increase {:.1} points)",
            canary.error_rate * 100.0,
            stable.error_rate * 100.0,
            canary.requests,
            stable.requests,
            guard.max_error_rate_increase * 100.0
        )));
    }
    // Latency needs both sides measured to compare.
    if stable.requests >= u64::from(guard.min_requests)
        && canary.p99 > stable.p99 + guard.max_p99_increase
    {
        return Some(Rollback::Latency(format!(
            "p99 latency {:?} on the new deployment vs {:?} on the old one (allowed increase {:?})",
            canary.p99, stable.p99, guard.max_p99_increase
        )));
    }
    None
}

#[cfg(test)]
mod tests;
