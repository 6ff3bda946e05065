//! The human summary (stdout) and the JSON results of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use hdrhistogram::Histogram;

use crate::stats::Stats;

fn percentiles_json(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Counts, rate (over `secs`), latency, statuses and errors of `s`.
pub(crate) fn stats_json(s: &Stats, secs: f64) -> Map<String, Value> {
    let requests = s.responses();
    let mut json = json!({
        "requests": requests,
        "requests_per_s": requests as f64 / secs,
        "ok": s.ok(),
        "failed": s.failed(),
        "latency_us": percentiles_json(&s.latency_us),
        "statuses": s.statuses,
        "errors": s.errors,
        "response_bytes": s.response_bytes,
    });
    if !s.send_lag_us.is_empty() {
        json["send_lag_us"] = percentiles_json(&s.send_lag_us);
    }
    match json {
        Value::Object(map) => map,
        _ => unreachable!("built as an object"),
    }
}

/// Prints `label`'s counts and latency percentiles.
pub(crate) fn print_stats(label: &str, s: &Stats, secs: f64) {
    let h = &s.latency_us;
    let requests = s.responses();
    println!(
        "{label:<10} requests {requests} ({:.0}/s), 2xx {}, failed {}",
        requests as f64 / secs,
        s.ok(),
        s.failed()
    );
    println!(
        "{:<10} latency p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
        "",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    if !s.send_lag_us.is_empty() {
        let lag = &s.send_lag_us;
        println!(
            "{:<10} send lag p50 {} us  p99 {} us  max {} us",
            "",
            lag.value_at_quantile(0.5),
            lag.value_at_quantile(0.99),
            lag.max()
        );
    }
    println!("{:<10} statuses {:?}", "", s.statuses);
    if !s.errors.is_empty() {
        println!("{:<10} errors {:?}", "", s.errors);
    }
}

/// Responses per header value, and each value's share of them.
pub(crate) fn counts_json(counts: &BTreeMap<String, u64>) -> (Value, Value) {
    let total: u64 = counts.values().sum();
    let fractions: BTreeMap<_, _> = counts
        .iter()
        .map(|(v, n)| (v.clone(), *n as f64 / total.max(1) as f64))
        .collect();
    (json!(counts), json!(fractions))
}

pub(crate) fn print_counts(header: &str, counts: &BTreeMap<String, u64>) {
    let total: u64 = counts.values().sum();
    println!("{header}:");
    for (value, n) in counts {
        println!(
            "  {value:<24} {n:>8}  {:>5.1}%",
            100.0 * *n as f64 / total.max(1) as f64
        );
    }
}

/// Nearest-rank percentile of ascending `sorted`.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `p50`, `p90` and `max` of ascending times, in microseconds.
pub(crate) fn sorted_summary_us(sorted: &[Duration]) -> Value {
    json!({
        "p50": percentile(sorted, 0.5).as_micros() as u64,
        "p90": percentile(sorted, 0.9).as_micros() as u64,
        "max": sorted.last().map_or(0, |d| d.as_micros() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms: Vec<_> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&ms, 0.9), Duration::from_millis(9));
        assert_eq!(percentile(&ms, 1.0), Duration::from_millis(10));
        assert_eq!(percentile(&ms[..1], 0.5), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn fractions_of_header_values() {
        let counts = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]);
        let (c, f) = counts_json(&counts);
        assert_eq!(c["a"], 3);
        assert_eq!(f["a"], 0.75);
        assert_eq!(f["b"], 0.25);
    }
}
