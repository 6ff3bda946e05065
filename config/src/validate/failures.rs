//! A deployment's `outlier_detection` and `retry` tables: what it does
//! about failing replicas.

use std::time::Duration;

use super::{Checker, secs};
use crate::model::{OutlierDetection, RetryPolicy};
use crate::path::ConfigPath;
use crate::raw::{RawOutlierDetection, RawRetry};

pub(super) fn outlier_detection(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: RawOutlierDetection,
) -> OutlierDetection {
    let d = OutlierDetection::default();
    let whole_secs = |t: std::time::Duration| u32::try_from(t.as_secs()).unwrap_or(u32::MAX);
    let base_ejection = secs(c.ranged(
        path,
        "base_ejection_secs",
        raw.base_ejection_secs,
        whole_secs(d.base_ejection),
        1,
        3600,
    ));
    // Unset, the longest ejection is at least the first one.
    let max_ejection = secs(c.ranged(
        path,
        "max_ejection_secs",
        raw.max_ejection_secs,
        whole_secs(d.max_ejection.max(base_ejection)),
        1,
        86_400,
    ));
    if max_ejection < base_ejection {
        c.error(
            path.key("max_ejection_secs"),
            format!(
                "`max_ejection_secs` ({}) is shorter than `base_ejection_secs` ({})",
                max_ejection.as_secs(),
                base_ejection.as_secs()
            ),
        );
    }
    OutlierDetection {
        consecutive_failures: c.ranged(
            path,
            "consecutive_failures",
            raw.consecutive_failures,
            d.consecutive_failures,
            0,
            1000,
        ),
        base_ejection,
        max_ejection,
        max_ejected_percent: c.ranged(
            path,
            "max_ejected_percent",
            raw.max_ejected_percent,
            d.max_ejected_percent,
            0,
            100,
        ),
        latency_factor: c.ranged(
            path,
            "latency_factor",
            raw.latency_factor,
            d.latency_factor,
            0,
            1000,
        ),
        restart_after_ejections: c.ranged(
            path,
            "restart_after_ejections",
            raw.restart_after_ejections,
            d.restart_after_ejections,
            0,
            1000,
        ),
    }
}

pub(super) fn retry(c: &mut Checker<'_>, path: &ConfigPath, raw: RawRetry) -> RetryPolicy {
    let d = RetryPolicy::default();
    let whole_ms = |t: Duration| u32::try_from(t.as_millis()).unwrap_or(u32::MAX);
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    let backoff = ms(c.ranged(
        path,
        "backoff_ms",
        raw.backoff_ms,
        whole_ms(d.backoff),
        0,
        10_000,
    ));
    let max_backoff = ms(c.ranged(
        path,
        "max_backoff_ms",
        raw.max_backoff_ms,
        whole_ms(d.max_backoff.max(backoff)),
        0,
        60_000,
    ));
    if max_backoff < backoff {
        c.error(
            path.key("max_backoff_ms"),
            format!(
                "`max_backoff_ms` ({}) is shorter than `backoff_ms` ({})",
                max_backoff.as_millis(),
                backoff.as_millis()
            ),
        );
    }
    RetryPolicy {
        attempts: c.ranged(path, "attempts", raw.attempts, d.attempts, 1, 10),
        budget_percent: c.ranged(
            path,
            "budget_percent",
            raw.budget_percent,
            d.budget_percent,
            0,
            100,
        ),
        min_retries_per_sec: c.ranged(
            path,
            "min_retries_per_sec",
            raw.min_retries_per_sec,
            d.min_retries_per_sec,
            0,
            10_000,
        ),
        backoff,
        max_backoff,
        idempotent: raw.idempotent.unwrap_or(d.idempotent),
    }
}
