//! A deployment's `outlier_detection` table: when live traffic takes a
//! replica out of routing.

use super::{Checker, secs};
use crate::model::OutlierDetection;
use crate::path::ConfigPath;
use crate::raw::RawOutlierDetection;

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
