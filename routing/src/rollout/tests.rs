use super::*;

#[test]
fn ten_equal_stages_over_the_duration_then_complete() {
    let d = 600_000;
    assert_eq!(Phase::at(0, d), Phase::Stage(1));
    assert_eq!(Phase::at(59_999, d), Phase::Stage(1));
    assert_eq!(Phase::at(60_000, d), Phase::Stage(2));
    assert_eq!(Phase::at(359_999, d), Phase::Stage(6));
    assert_eq!(Phase::at(540_000, d), Phase::Stage(10));
    assert_eq!(Phase::at(599_999, d), Phase::Stage(10));
    assert_eq!(Phase::at(600_000, d), Phase::Complete);
    let percents: Vec<u32> = (0..10)
        .map(|k| Phase::at(k * 60_000, d).percent())
        .collect();
    assert_eq!(percents, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(Phase::Complete.percent(), 100);
}

/// Every window of `n` consecutive requests, starting anywhere in the
/// first `n` requests of a long run, sends round(n p / 100) +/- 1.
fn check_windows(percent: u32, n: u64) {
    let sides: Vec<bool> = (0..3 * n).map(|i| canary_at(i, percent)).collect();
    let exact = n as f64 * f64::from(percent) / 100.0;
    let mut count = sides[..n as usize].iter().filter(|&&c| c).count() as i64;
    for start in 0..=(2 * n) as usize {
        if start > 0 {
            count -= i64::from(sides[start - 1]);
            count += i64::from(sides[start + n as usize - 1]);
        }
        let off = (count as f64 - exact.round()).abs();
        assert!(
            off <= 1.0,
            "{percent}%: window at {start} of {n} has {count}, exact {exact}"
        );
    }
}

#[test]
fn every_window_gets_its_share_within_one_at_every_stage() {
    for k in 1..=STAGES {
        let percent = Phase::Stage(k).percent();
        check_windows(percent, 100);
        check_windows(percent, 10_000);
    }
    // Shares that are not multiples of ten hold too.
    for percent in [1, 7, 33, 99] {
        check_windows(percent, 100);
    }
}

#[test]
fn the_split_counts_across_calls() {
    let split = SmoothSplit::default();
    let canary = (0..1000).filter(|_| split.next(30) == Side::Canary).count();
    assert_eq!(canary, 300);
    let all = (0..10).all(|_| split.next(100) == Side::Canary);
    assert!(all);
}

#[test]
fn sessions_stay_on_the_canary_once_they_reach_it() {
    for hash in [0u64, 9, 42, 99, 12_345_678_901] {
        let mut seen_canary = false;
        for k in 1..=STAGES {
            let side = sticky_side(hash, Phase::Stage(k).percent());
            if seen_canary {
                assert_eq!(side, Side::Canary, "session {hash} went back at stage {k}");
            }
            seen_canary |= side == Side::Canary;
        }
        assert!(seen_canary, "everyone is on the canary at 100%");
    }
    let on_canary = (0..10_000u64)
        .filter(|h| sticky_side(h.wrapping_mul(0x9E37_79B9_7F4A_7C15), 30) == Side::Canary)
        .count();
    assert!((2_800..3_200).contains(&on_canary), "{on_canary}");
}

fn guard() -> config::RollbackGuard {
    config::RollbackGuard {
        max_error_rate_increase: 0.05,
        max_p99_increase: Duration::from_millis(250),
        min_requests: 50,
    }
}

fn fill(stats: &RolloutStats, side: Side, n: u32, failed: u32, latency_ms: u64) {
    for i in 0..n {
        stats.record(side, i < failed, Duration::from_millis(latency_ms));
    }
}

#[test]
fn the_guard_rolls_back_on_errors_or_latency_with_enough_samples_only() {
    let stats = RolloutStats::default();
    stats.enter_stage(1);
    fill(&stats, Side::Stable, 200, 2, 10);
    fill(&stats, Side::Canary, 40, 40, 10);
    let (s, c) = stats.summaries();
    assert_eq!(rollback_reason(&guard(), &s, &c), None, "40 < min_requests");
    fill(&stats, Side::Canary, 10, 10, 10);
    let (s, c) = stats.summaries();
    let why = rollback_reason(&guard(), &s, &c).expect("100% errors vs 1%");
    assert_eq!(why.label(), "error_rate");
    assert!(why.to_string().contains("error rate 100.0%"), "{why}");

    // A new stage starts from zero.
    assert!(stats.enter_stage(2));
    assert!(!stats.enter_stage(2));
    fill(&stats, Side::Stable, 100, 0, 10);
    fill(&stats, Side::Canary, 100, 4, 10);
    let (s, c) = stats.summaries();
    assert_eq!(
        rollback_reason(&guard(), &s, &c),
        None,
        "4% more errors is allowed"
    );

    stats.enter_stage(3);
    fill(&stats, Side::Stable, 100, 0, 10);
    fill(&stats, Side::Canary, 100, 0, 400);
    let (s, c) = stats.summaries();
    assert!(c.p99 >= Duration::from_millis(400) && s.p99 < Duration::from_millis(13));
    let why = rollback_reason(&guard(), &s, &c).expect("p99 +390 ms");
    assert_eq!(why.label(), "latency");
    assert!(why.to_string().contains("p99"), "{why}");
}
