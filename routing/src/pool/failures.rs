//! What a deployment does about failing replicas: each request reports
//! its replica's outcome through its [`Lease`] (enough failures in a row
//! eject the replica, see [`crate::outlier`]), and a failed attempt may be
//! retried on another replica within the deployment's policy and budget
//! (see [`crate::retry`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use config::{OutlierDetection, RetryPolicy};

use super::{Lease, Pool};
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

    /// A slot on another routable replica for attempt `attempts + 1`, if
    /// the deployment's retry policy allows that many, one is free and the
    /// retry budget has one left. A connection failure also takes this
    /// replica out of routing (until a probe passes).
    pub fn retry_elsewhere(&self, why: RetryReason, attempts: u32) -> Option<Lease> {
        if why == RetryReason::Connect {
            self.replica.mark_unreachable();
        }
        let policy = self.pool.retry_policy();
        if attempts >= policy.attempts {
            return None;
        }
        let other = {
            let set = self.pool.replicas.load();
            let other = set.claim_other(self.pool.limit(), &self.replica)?;
            self.pool.lease(Arc::clone(other))
        };
        // Taken after the slot, so a retry with nowhere to go costs no
        // budget; dropping `other` gives the slot back.
        let budget = &self.pool.retry_budget;
        budget
            .withdraw(&policy, why, self.pool.served(), outlier::now_ms())
            .then_some(other)
    }
}
