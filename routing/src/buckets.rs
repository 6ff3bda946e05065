//! Log-scale latency buckets shared by the rollout guard and the recent
//! window statistics: 4 per power of two of microseconds (at most 19%
//! wide), up to 2^40 us. Counting is one relaxed add into a fixed array.

use std::time::Duration;

/// How many buckets.
pub(crate) const BUCKETS: usize = 41 * 4;

/// The bucket of a latency in microseconds.
pub(crate) fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as usize; // >= 2
    let sub = ((us >> (exp - 2)) & 3) as usize;
    ((exp - 1) * 4 + sub).min(BUCKETS - 1)
}

/// The bucket of a duration.
pub(crate) fn bucket_of(latency: Duration) -> usize {
    bucket(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))
}

/// The largest latency (us) that falls in bucket `i`.
pub(crate) fn bucket_upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let exp = i / 4 + 1;
    let sub = (i % 4) as u64;
    ((4 + sub + 1) << (exp - 2)) - 1
}

/// The `q` quantile (0..=1) of bucket counts, as the upper bound of the
/// bucket it falls in; zero when nothing was counted.
pub(crate) fn quantile(counts: &[u64], q: f64) -> Duration {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Duration::from_micros(bucket_upper(i));
        }
    }
    Duration::from_micros(bucket_upper(counts.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_contiguous_and_narrow() {
        for i in 0..BUCKETS - 1 {
            let upper = bucket_upper(i);
            assert_eq!(bucket(upper), i, "upper bound of {i}");
            assert_eq!(bucket(upper + 1), i + 1, "first value after {i}");
        }
        for us in [5u64, 100, 1_000, 250_000, 10_000_000] {
            let upper = bucket_upper(bucket(us));
            assert!(
                upper >= us && (upper - us) as f64 <= us as f64 * 0.25,
                "{us} -> {upper}"
            );
        }
    }

    #[test]
    fn quantiles_pick_the_bucket_holding_that_rank() {
        let mut counts = vec![0; BUCKETS];
        counts[bucket(100)] = 90;
        counts[bucket(10_000)] = 10;
        let p50 = quantile(&counts, 0.5).as_micros() as u64;
        let p99 = quantile(&counts, 0.99).as_micros() as u64;
        assert!((100..=119).contains(&p50), "p50 {p50}");
        assert!((10_000..=11_999).contains(&p99), "p99 {p99}");
        assert_eq!(quantile(&vec![0; BUCKETS], 0.5), Duration::ZERO);
    }
}
