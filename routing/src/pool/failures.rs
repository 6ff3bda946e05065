//! What a deployment does about failing replicas: each request reports
//! its replica's outcome through its [`Lease`] (enough failures in a row
//! eject the replica, see [`crate::outlier`]), and a failed attempt may be
//! retried on another replica within the deployment's policy and budget
//! (see [`crate::retry`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use config::{OutlierDetection, RetryPolicy};

use super::{Admission, Lease, Pool};
use crate::outlier::{self, Ejection, Failure};
use crate::replicas::Replica;
use crate::retry::RetryReason;

impl Pool {
    /// When its traffic ejects a replica.
    pub fn outlier_detection(&self) -> OutlierDetection {
        **self.outlier_detection.load()
    }

    /// Ejections so far for `why`.
    pub fn ejections(&self, why: Ejection) -> u64 {
        self.ejections[why as usize].load(Ordering::Relaxed)
    }

    /// Ejects `replica` for `why` if the deployment's settings and its
    /// other replicas allow it.
    pub fn eject(&self, replica: &Replica, why: Ejection) -> bool {
        let settings = self.outlier_detection();
        let set = self.replicas.load();
        let ejected = outlier::try_eject(&set, replica, &settings, why, outlier::now_ms());
        if ejected.is_some() {
            self.ejections[why as usize].fetch_add(1, Ordering::Relaxed);
        }
        ejected.is_some()
    }

    /// Ejects the replicas whose latency runs far above their peers' (the
    /// health checker asks, each round); how many it ejected.
    pub fn eject_slow_replicas(&self) -> usize {
        let settings = self.outlier_detection();
        let set = self.replicas.load();
        outlier::latency_outliers(&set, &settings)
            .into_iter()
            .filter(|r| self.eject(r, Ejection::Latency))
            .count()
    }
}

impl Lease {
    /// Its deployment's retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.pool.retry_policy()
    }

    /// The replica answered (with any status that is not a counted
    /// failure), after `latency` (to its response head).
    pub fn answered(&self, latency: Duration) {
        self.replica.outlier().answered(latency);
    }

    /// The request failed at the replica: enough failures in a row eject
    /// it (see [`crate::outlier`]).
    pub fn failed(&self, failure: Failure) {
        let settings = self.pool.outlier_detection.load();
        if outlier::failure_ejects(&self.replica, &settings) {
            log::debug!("replica {}: {failure:?}", self.replica.addr());
            self.pool.eject(&self.replica, Ejection::Failures);
        }
    }

    /// What attempt `attempts + 1` may do: take a slot on another
    /// routable replica, if the deployment's retry policy allows that many
    /// attempts, one is free and the retry budget has one left. A
    /// connection failure also takes this replica out of routing (until a
    /// probe passes), and when no other replica is free the request may
    /// [`wait`](Retry::Wait) for a slot instead ([`Lease::requeue`]):
    /// nothing reached a replica, so it is as good as new. A busy replica
    /// that cannot be left for another is tried [`again`](Retry::Again).
    pub fn retry_elsewhere(&self, why: RetryReason, attempts: u32) -> Retry {
        if why == RetryReason::Connect {
            self.replica.mark_unreachable();
        }
        // Busy is no failure: the replica read nothing, and its slots are
        // held by other senders (another gateway), not by this pool. When
        // no other replica can take the request, it waits for this one.
        let stay = if why == RetryReason::Busy {
            Retry::Again
        } else {
            Retry::Spent
        };
        let policy = self.pool.retry_policy();
        if attempts >= policy.attempts {
            return stay;
        }
        let other = {
            let set = self.pool.replicas.load();
            set.claim_other(self.pool.limit(), &self.replica)
                .map(|other| self.pool.lease(Arc::clone(other)))
        };
        let Some(other) = other else {
            // Nowhere to go now: that costs no budget (a wait pays when
            // it is taken, in `requeue`).
            return if why == RetryReason::Connect {
                Retry::Wait
            } else {
                stay
            };
        };
        // Taken after the slot; dropping `other` gives the slot back.
        if self.withdraw_retry(&policy, why) {
            Retry::Elsewhere(other)
        } else {
            stay
        }
    }

    /// After [`Retry::Wait`]: gives this slot back and, if the retry budget
    /// has one left (the wait is a retry), admits the request again: a
    /// free slot at once, or a place in the queue behind the requests
    /// already waiting, as a new request would get. `bytes` is what it
    /// holds while parked. `None` when the budget is spent.
    pub fn requeue(self, bytes: u64) -> Option<Admission> {
        let policy = self.pool.retry_policy();
        if !self.withdraw_retry(&policy, RetryReason::Connect) {
            return None;
        }
        let pool = Arc::clone(&self.pool);
        drop(self);
        Some(pool.admit(bytes))
    }

    /// Takes one retry for `why` from the deployment's budget.
    fn withdraw_retry(&self, policy: &RetryPolicy, why: RetryReason) -> bool {
        let pool = &self.pool;
        pool.retry_budget
            .withdraw(policy, why, pool.served(), outlier::now_ms())
    }
}

/// What a request does after a failed attempt.
#[derive(Debug)]
pub enum Retry {
    /// Tries again on this slot of another replica.
    Elsewhere(Lease),
    /// Its connection failed and every other replica is at its limit:
    /// it may wait for a slot ([`Lease::requeue`]).
    Wait,
    /// The replica answered busy and the request cannot go elsewhere: it
    /// keeps its slot and tries the same replica again after a backoff,
    /// within its deadline.
    Again,
    /// No further attempt: the policy's attempts or the budget are spent,
    /// or (for a failure of the replica's) no other replica is free.
    Spent,
}
