//! What requests did, per phase: latency histogram, statuses, transport
//! errors by kind, and (canary) responses per value of one header.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::Answer;

#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub(crate) latency_us: Histogram<u64>,
    /// Open loop: how late each request went out after its due time.
    pub(crate) send_lag_us: Histogram<u64>,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// Responses per value of the counted header.
    pub(crate) header_values: BTreeMap<String, u64>,
    pub(crate) response_bytes: u64,
}

impl Default for Stats {
    fn default() -> Self {
        // 1 us to 1 h: a parked request may wait minutes.
        let histogram =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self {
            latency_us: histogram(),
            send_lag_us: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            header_values: BTreeMap::new(),
            response_bytes: 0,
        }
    }
}

impl Stats {
    pub(crate) fn answer(&mut self, latency: Duration, answer: Answer) {
        self.latency_us
            .saturating_record((latency.as_micros() as u64).max(1));
        *self.statuses.entry(answer.status).or_default() += 1;
        self.response_bytes += answer.body_bytes;
        if let Some(value) = answer.counted {
            *self.header_values.entry(value).or_default() += 1;
        }
    }

    pub(crate) fn lag(&mut self, lag: Duration) {
        self.send_lag_us.saturating_record(lag.as_micros() as u64);
    }

    pub(crate) fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &Stats) {
        self.latency_us
            .add(&other.latency_us)
            .expect("same histogram bounds");
        self.send_lag_us
            .add(&other.send_lag_us)
            .expect("same histogram bounds");
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (value, n) in &other.header_values {
            *self.header_values.entry(value.clone()).or_default() += n;
        }
        self.response_bytes += other.response_bytes;
    }

    /// Responses, of any status.
    pub(crate) fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// 2xx responses: the only successes.
    pub(crate) fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Non-2xx responses plus requests lost to transport errors.
    pub(crate) fn failed(&self) -> u64 {
        self.responses() - self.ok() + self.errors.values().sum::<u64>()
    }
}

/// Merges per-connection, per-phase stats into per-phase stats.
pub(crate) fn merge_phases(per_connection: Vec<Vec<Stats>>, phases: usize) -> Vec<Stats> {
    let mut merged = vec![Stats::default(); phases];
    for conn in per_connection {
        for (into, from) in merged.iter_mut().zip(&conn) {
            into.merge(from);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, counted: Option<&str>) -> Answer {
        Answer {
            status,
            head_at: tokio::time::Instant::now(),
            body_bytes: 2,
            counted: counted.map(str::to_owned),
        }
    }

    #[test]
    fn only_2xx_succeeds_and_transport_errors_count_as_failures() {
        let mut s = Stats::default();
        s.answer(Duration::from_millis(1), answer(200, Some("a")));
        s.answer(Duration::from_millis(1), answer(204, Some("b")));
        s.answer(Duration::from_millis(1), answer(302, Some("a")));
        s.answer(Duration::from_millis(1), answer(503, None));
        s.error("send");
        s.lag(Duration::ZERO);
        assert_eq!((s.responses(), s.ok(), s.failed()), (4, 2, 3));
        let mut total = Stats::default();
        total.merge(&s);
        total.merge(&s);
        assert_eq!(total.header_values["a"], 4);
        assert_eq!(total.errors["send"], 2);
        assert_eq!(total.latency_us.len(), 8);
        assert_eq!(total.send_lag_us.len(), 2);
    }
}
