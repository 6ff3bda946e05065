//! A deployment's `outlier_detection` and `retry` settings: what it does
//! about failing replicas.

use std::time::Duration;

/// A deployment's `outlier_detection` table: when live traffic takes a
/// replica out of routing (ejects it). A replica that fails
/// `consecutive_failures` requests in a row (a 5xx other than an overloaded
/// 503 with `Retry-After`, a connection failure, no response within the
/// upstream timeouts, a response cut off), or whose latency grows past
/// `latency_factor` times its peers', is ejected for `base_ejection` times
/// 2^(ejections so far), at most `max_ejection`; it returns once that time
/// has passed and a readiness probe passes. At most `max_ejected_percent`
/// of the deployment's replicas are ejected at once (and never the last
/// routable one). A local replica ejected `restart_after_ejections` times
/// in a row is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row that eject a replica; 0 = never on failures.
    /// Default 5, 0-1000.
    pub consecutive_failures: u32,
    /// The first ejection's length. Default 10 s, 1-3600 s.
    pub base_ejection: Duration,
    /// The longest ejection. Default 300 s (or the first ejection's length,
    /// if longer), 1-86400 s.
    pub max_ejection: Duration,
    /// Share of a deployment's replicas ejected at once, at most. Default
    /// 50, 0-100.
    pub max_ejected_percent: u32,
    /// A replica whose average latency exceeds this many times the median
    /// of its peers' is ejected; 0 (default) = never on latency. 0-1000.
    pub latency_factor: u32,
    /// Ejections in a row (without a quiet `max_ejection` between them)
    /// after which a local replica is replaced. Default 3, 0 = never.
    pub restart_after_ejections: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
            latency_factor: 0,
            restart_after_ejections: 3,
        }
    }
}

/// A deployment's `retry` table: when a failed attempt is tried again on
/// another replica. Always when nothing of the request can have been
/// processed (the connection failed, or the replica answered 503 with
/// `Retry-After`, i.e. busy, and the gateway still holds the body); with
/// `idempotent`, also a GET, HEAD, OPTIONS, PUT or DELETE whose attempt
/// failed otherwise (a 5xx, a timeout, a broken connection). Never once a
/// byte of the response has reached the client. Retries are held to a
/// budget: `budget_percent` of the deployment's requests plus
/// `min_retries_per_sec`, so that retries cannot multiply the load on a
/// failing deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included; 1 = never retry. Default
    /// 3, 1-10.
    pub attempts: u32,
    /// Retries allowed as a share of requests, in percent. Default 20,
    /// 0-100.
    pub budget_percent: u32,
    /// Retries allowed per second whatever the share. Default 10, 0-10000.
    pub min_retries_per_sec: u32,
    /// Wait before the first retry after an answer (doubled for each
    /// further one, with jitter); connection failures retry at once.
    /// Default 25 ms, 0-10000.
    pub backoff: Duration,
    /// Longest wait between attempts. Default 250 ms, 0-60000.
    pub max_backoff: Duration,
    /// Retry idempotent methods after any failure. Default false.
    pub idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            budget_percent: 20,
            min_retries_per_sec: 10,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            idempotent: false,
        }
    }
}
