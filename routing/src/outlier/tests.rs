use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn set(n: u16) -> ReplicaSet {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    ReplicaSet::new(&addrs)
}

fn settings() -> OutlierDetection {
    OutlierDetection {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(60),
        max_ejected_percent: 50,
        latency_factor: 5,
        restart_after_ejections: 3,
    }
}

#[test]
fn failures_in_a_row_reach_the_threshold_and_an_answer_starts_over() {
    let s = set(2);
    let r = &s.replicas()[0];
    assert!(!failure_ejects(r, &settings()));
    assert!(!failure_ejects(r, &settings()));
    r.outlier().answered(Duration::from_millis(5));
    assert!(!failure_ejects(r, &settings()));
    assert!(!failure_ejects(r, &settings()));
    assert!(failure_ejects(r, &settings()), "third in a row");
    let off = OutlierDetection {
        consecutive_failures: 0,
        ..settings()
    };
    assert!(!failure_ejects(r, &off), "0 never ejects");
}

#[test]
fn at_most_the_allowed_share_is_ejected_and_never_the_last_replica() {
    let s = set(2);
    let [a, b] = [&s.replicas()[0], &s.replicas()[1]];
    assert!(try_eject(&s, a, &settings(), Ejection::Failures, 1).is_some());
    assert_eq!(a.health(), Health::Ejected);
    assert!(!a.is_routable());
    assert!(
        try_eject(&s, b, &settings(), Ejection::Failures, 1).is_none(),
        "half of two is one"
    );
    assert!(b.is_routable());

    let one = set(1);
    assert!(try_eject(&one, &one.replicas()[0], &settings(), Ejection::Failures, 1).is_none());

    let four = set(4);
    let all = OutlierDetection {
        max_ejected_percent: 100,
        ..settings()
    };
    let ejected = four
        .replicas()
        .iter()
        .filter(|r| try_eject(&four, r, &all, Ejection::Failures, 1).is_some())
        .count();
    assert_eq!(ejected, 3, "every one but the last routable");

    let none = OutlierDetection {
        max_ejected_percent: 0,
        ..settings()
    };
    let s = set(4);
    assert!(try_eject(&s, &s.replicas()[0], &none, Ejection::Failures, 1).is_none());
}

#[test]
fn ejections_in_a_row_double_up_to_the_longest_and_a_quiet_spell_resets_them() {
    let t = Tracker::default();
    let s = settings();
    let secs = Duration::from_secs;
    assert_eq!(t.eject(&s, 1_000), secs(10));
    assert!(t.ejected_at(10_999) && !t.ejected_at(11_000));
    // Back at 11 s and ejected again soon after: twice as long.
    assert_eq!(t.eject(&s, 12_000), secs(20));
    assert_eq!(t.eject(&s, 33_000), secs(40));
    assert_eq!(t.eject(&s, 74_000), secs(60), "capped at the longest");
    assert_eq!(t.ejections(), 4);
    // A minute in routing since the last one ended: back to the first.
    assert_eq!(t.eject(&s, 134_000 + 60_000), secs(10));
    assert_eq!(t.ejections(), 1);
}

#[test]
fn an_ejected_replica_returns_only_after_its_backoff_and_a_passing_probe() {
    let s = set(2);
    let r = &s.replicas()[0];
    r.record_probe(true, 2);
    assert!(try_eject(&s, r, &settings(), Ejection::Failures, now_ms()).is_some());
    assert_eq!(r.record_probe(true, 2), None, "still within its backoff");
    assert_eq!(r.health(), Health::Ejected);
    r.mark_unreachable();
    assert_eq!(
        r.health(),
        Health::Ejected,
        "a connect failure does not shorten it"
    );
    r.outlier().ejected_until.store(0, Ordering::Relaxed);
    assert_eq!(r.record_probe(true, 2), Some(Health::Ready));
    assert!(r.is_routable());

    let r = &s.replicas()[1];
    assert!(try_eject(&s, r, &settings(), Ejection::Failures, now_ms()).is_some());
    r.outlier().ejected_until.store(0, Ordering::Relaxed);
    assert_eq!(
        r.record_probe(false, 2),
        Some(Health::Unready),
        "a failed probe after the backoff: no proof it can serve"
    );
}

fn with_latencies(ms: &[u64]) -> ReplicaSet {
    let s = set(ms.len() as u16);
    for (r, &ms) in s.replicas().iter().zip(ms) {
        for _ in 0..MIN_LATENCY_SAMPLES {
            r.outlier().answered(Duration::from_millis(ms));
        }
    }
    s
}

#[test]
fn a_replica_far_slower_than_its_peers_is_a_latency_outlier() {
    let s = with_latencies(&[10, 12, 200]);
    let slow: Vec<_> = latency_outliers(&s, &settings())
        .iter()
        .map(|r| r.addr().port())
        .collect();
    assert_eq!(slow, [9002]);
    let off = OutlierDetection {
        latency_factor: 0,
        ..settings()
    };
    assert!(latency_outliers(&s, &off).is_empty());
    // Five times slower, but by less than the noise floor.
    assert!(latency_outliers(&with_latencies(&[1, 1, 8]), &settings()).is_empty());
    // Too few answers to judge.
    let s = set(2);
    s.replicas()[0].outlier().answered(Duration::from_secs(5));
    assert!(latency_outliers(&s, &settings()).is_empty());
}

#[test]
fn a_pool_counts_its_ejections_by_reason() {
    let parked_bytes = Arc::new(crate::ParkedBytes::new(u64::MAX));
    let pool = Arc::new(crate::Pool::new(
        4,
        Default::default(),
        parked_bytes,
        Arc::default(),
    ));
    pool.configure(4, Default::default(), settings(), Default::default());
    pool.set_replicas(with_latencies(&[10, 10, 300]));
    assert_eq!(pool.eject_slow_replicas(), 1);
    assert_eq!(pool.ejections(Ejection::Latency), 1);
    assert_eq!(pool.ejections(Ejection::Failures), 0);
    let ejected = pool.replicas().replicas()[2].health();
    assert_eq!(ejected, Health::Ejected);
}
