use std::time::Duration;

use super::*;

fn policy(percent: u32, per_sec: u32) -> RetryPolicy {
    RetryPolicy {
        budget_percent: percent,
        min_retries_per_sec: per_sec,
        ..RetryPolicy::default()
    }
}

/// Retries granted out of `asked`, asked at one instant after `served`
/// requests.
fn granted(
    budget: &RetryBudget,
    policy: &RetryPolicy,
    served: u64,
    now_ms: u64,
    asked: u32,
) -> u32 {
    (0..asked)
        .filter(|_| budget.withdraw(policy, RetryReason::Busy, served, now_ms))
        .count() as u32
}

/// A budget for `policy` that has spent the burst it starts with (which
/// it checks: `burst` retries).
fn spent(policy: &RetryPolicy, burst: u32) -> RetryBudget {
    let budget = RetryBudget::default();
    assert_eq!(
        granted(&budget, policy, 0, 0, 1_000),
        burst,
        "the starting burst"
    );
    budget
}

#[test]
fn a_share_of_the_requests_may_be_retried() {
    let p = policy(20, 0);
    let budget = spent(&p, 20);
    assert_eq!(
        granted(&budget, &p, 0, 0, 5),
        0,
        "no requests, no floor: none"
    );
    assert_eq!(granted(&budget, &p, 100, 0, 50), 20, "20% of 100 requests");
    assert_eq!(granted(&budget, &p, 110, 0, 50), 2, "20% of 10 more");
    assert_eq!(budget.retries(RetryReason::Busy), 20 + 22);
    assert_eq!(budget.exhausted(), 980 + 5 + 30 + 48);
}

#[test]
fn the_floor_refills_with_time_up_to_ten_seconds_of_it() {
    let p = policy(0, 10);
    let budget = spent(&p, 100);
    assert_eq!(granted(&budget, &p, 0, 1_000, 50), 10, "one second: 10");
    assert_eq!(
        granted(&budget, &p, 0, 1_500, 50),
        5,
        "half a second more: 5"
    );
    assert_eq!(
        granted(&budget, &p, 0, 3_600_000, 500),
        100,
        "an hour banks no more than ten seconds' worth"
    );
}

#[test]
fn a_healthy_spell_banks_at_most_a_bounded_burst() {
    let p = policy(20, 10);
    let budget = spent(&p, 20 + 100);
    // A million requests: a burst of 20 per 100 requests' worth plus ten
    // seconds of the floor, not 200,000.
    assert_eq!(granted(&budget, &p, 1_000_000, 0, 1_000), 20 + 100);
    let none = policy(0, 0);
    assert_eq!(granted(&RetryBudget::default(), &none, 1_000, 1_000, 10), 0);
}

#[test]
fn backoff_doubles_up_to_its_longest_with_jitter() {
    let p = RetryPolicy {
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    for _ in 0..100 {
        let first = backoff(&p, 1);
        assert!((50..=100).contains(&first.as_millis()), "{first:?}");
        let second = backoff(&p, 2);
        assert!((100..=200).contains(&second.as_millis()), "{second:?}");
        let later = backoff(&p, 9);
        assert!((150..=300).contains(&later.as_millis()), "{later:?}");
    }
    let none = RetryPolicy {
        backoff: Duration::ZERO,
        ..p
    };
    assert_eq!(backoff(&none, 3), Duration::ZERO);
}
