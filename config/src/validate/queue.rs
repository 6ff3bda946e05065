//! A deployment's `queue` table: its activation queue's length, timeout and
//! backpressure.

use super::{Checker, secs};
use crate::model::{Backpressure, QueueSettings};
use crate::path::ConfigPath;
use crate::raw::RawQueue;

pub(super) fn queue(c: &mut Checker<'_>, path: &ConfigPath, raw: RawQueue) -> QueueSettings {
    let d = QueueSettings::default();
    let default_timeout = u32::try_from(d.timeout.as_secs()).unwrap_or(u32::MAX);
    let backpressure = match raw.backpressure.as_deref() {
        None | Some("QUEUE_ON_FULL") => Backpressure::QueueOnFull,
        Some("REJECT_ON_FULL") => Backpressure::RejectOnFull,
        Some(other) => {
            c.error(
                path.key("backpressure"),
                format!("unknown backpressure `{other}`: use QUEUE_ON_FULL or REJECT_ON_FULL"),
            );
            d.backpressure
        }
    };
    QueueSettings {
        max_length: c.ranged(
            path,
            "max_length",
            raw.max_length,
            d.max_length,
            0,
            1_000_000,
        ),
        timeout: secs(c.ranged(
            path,
            "timeout_secs",
            raw.timeout_secs,
            default_timeout,
            1,
            3600,
        )),
        backpressure,
    }
}
