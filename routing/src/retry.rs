//! Retries held to a budget (Linkerd's model): a deployment may retry a
//! share of its requests (`budget_percent`) plus a floor per second
//! (`min_retries_per_sec`), so that when its replicas fail, retries cannot
//! multiply the load on them. The budget is kept in milli-retries and
//! topped up lazily, when a retry is asked for, from the deployment's
//! request count and the time since the last top-up: the hot path of a
//! request that needs no retry pays nothing for it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use config::RetryPolicy;

/// Why a request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection to the replica failed: nothing reached it.
    Connect,
    /// The replica answered 503 with `Retry-After`: busy, and nothing of
    /// the request was processed.
    Busy,
    /// An idempotent request's attempt failed otherwise (the deployment
    /// opted in).
    Failure,
}

impl RetryReason {
    pub const ALL: [Self; 3] = [Self::Connect, Self::Busy, Self::Failure];

    /// The `reason` label of `igw_retries_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Busy => "busy",
            Self::Failure => "failure",
        }
    }
}

/// One retry, in the budget's unit.
const MILLI: i64 = 1000;

/// One deployment's retry budget and counts. It starts full (a burst's
/// worth, as after a healthy spell), so a deployment that fails at once
/// can retry at once.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-retries available now.
    balance: AtomicI64,
    /// The deployment's request count at the last top-up.
    served_seen: AtomicU64,
    /// When the last top-up was ([`crate::outlier::now_ms`]).
    topped_up_at: AtomicU64,
    /// Retries made, by [`RetryReason`] (in [`RetryReason::ALL`]'s order).
    retries: [AtomicU64; 3],
    /// Retries refused for want of budget.
    exhausted: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            // Capped to the policy's burst at the first withdrawal.
            balance: AtomicI64::new(i64::MAX),
            served_seen: AtomicU64::new(0),
            topped_up_at: AtomicU64::new(0),
            retries: Default::default(),
            exhausted: AtomicU64::new(0),
        }
    }
}

impl RetryBudget {
    /// Takes one retry for `why` from the budget, after topping it up from
    /// `served` (the deployment's requests so far) and the time `now_ms`;
    /// false (and counted) when none is left.
    pub fn withdraw(
        &self,
        policy: &RetryPolicy,
        why: RetryReason,
        served: u64,
        now_ms: u64,
    ) -> bool {
        let requests = served.saturating_sub(self.served_seen.fetch_max(served, Ordering::Relaxed));
        let elapsed = now_ms.saturating_sub(self.topped_up_at.fetch_max(now_ms, Ordering::Relaxed));
        let percent = i64::from(policy.budget_percent);
        let per_sec = i64::from(policy.min_retries_per_sec);
        // A percent of a request is 10 milli-retries; a retry per second
        // is one milli-retry per millisecond.
        let deposit = i64::try_from(requests)
            .unwrap_or(i64::MAX)
            .saturating_mul(percent * 10)
            .saturating_add(
                i64::try_from(elapsed)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(per_sec),
            );
        // At most a burst of `percent` retries per 100 requests plus ten
        // seconds of the floor: a long healthy spell does not bank a storm.
        let cap = percent * 10 * 100 + per_sec * 10 * MILLI;
        let mut allowed = false;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                let topped = balance.saturating_add(deposit).min(cap);
                allowed = topped >= MILLI;
                Some(if allowed { topped - MILLI } else { topped })
            });
        if allowed {
            self.retries[why as usize].fetch_add(1, Ordering::Relaxed);
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Retries made for `why`.
    pub fn retries(&self, why: RetryReason) -> u64 {
        self.retries[why as usize].load(Ordering::Relaxed)
    }

    /// Retries refused for want of budget.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// How long to wait before retry number `retry` (1 for the first) after
/// an answer: the policy's backoff doubled per retry, up to its longest,
/// with jitter (half to all of it) so that retries do not arrive together.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let full = policy
        .backoff
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(policy.max_backoff);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests;
