//! A deployment's `outlier_detection` and `retry` tables: what it does
//! about failing replicas.

use std::time::Duration;

use super::Checker;
use crate::model::{OutlierDetection, RetryPolicy};
use crate::path::ConfigPath;
use crate::raw::{RawOutlierDetection, RawRetry};

pub(super) fn outlier_detection(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: RawOutlierDetection,
) -> OutlierDetection {
    let d = OutlierDetection::default();
    let (base_ejection, max_ejection) = first_and_longest(
        c,
        path,
        Duration::from_secs(1),
        DurationKey {
            name: "base_ejection_secs",
            raw: raw.base_ejection_secs,
            default: d.base_ejection,
            range: (1, 3600),
        },
        DurationKey {
            name: "max_ejection_secs",
            raw: raw.max_ejection_secs,
            default: d.max_ejection,
            range: (1, 86_400),
        },
    );
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
    let (backoff, max_backoff) = first_and_longest(
        c,
        path,
        Duration::from_millis(1),
        DurationKey {
            name: "backoff_ms",
            raw: raw.backoff_ms,
            default: d.backoff,
            range: (0, 10_000),
        },
        DurationKey {
            name: "max_backoff_ms",
            raw: raw.max_backoff_ms,
            default: d.max_backoff,
            range: (0, 60_000),
        },
    );
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

/// A duration key: its name, its value as written (in the caller's unit),
/// its default and its range in that unit.
struct DurationKey<'a> {
    name: &'a str,
    raw: Option<i64>,
    default: Duration,
    range: (u32, u32),
}

/// A first duration and the longest it may grow to (an ejection, a
/// backoff), both counted in `unit`s: unset, the longest is at least the
/// first; set shorter than it, an error that names both keys.
fn first_and_longest(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    unit: Duration,
    first: DurationKey<'_>,
    longest: DurationKey<'_>,
) -> (Duration, Duration) {
    let count = |t: Duration| u32::try_from(t.as_nanos() / unit.as_nanos()).unwrap_or(u32::MAX);
    let mut read = |key: &DurationKey<'_>, default: Duration| {
        let (min, max) = key.range;
        unit * c.ranged(path, key.name, key.raw, count(default), min, max)
    };
    let first_value = read(&first, first.default);
    let longest_value = read(&longest, longest.default.max(first_value));
    if longest_value < first_value {
        c.error(
            path.key(longest.name),
            format!(
                "`{}` ({}) is shorter than `{}` ({})",
                longest.name,
                count(longest_value),
                first.name,
                count(first_value)
            ),
        );
    }
    (first_value, longest_value)
}
