//! A deployment's `outlier_detection` and `retry` tables: defaults,
//! accepted values and the errors bad ones get.

use config::{OutlierDetection, RetryPolicy, load_str};
use std::time::Duration;

fn with(deployment: &str) -> Result<config::Config, String> {
    let text = format!(
        "[[models]]\nid = \"m1\"\n[[models.deployments]]\nid = \"d1\"\nreplicas = {{ source = \"static\", addresses = [\"127.0.0.1:9\"] }}\n{deployment}\n[[models.environments]]\nname = \"production\"\ndeployment = \"d1\"\n"
    );
    load_str(&text, "gateway.toml").map_err(|e| e.to_string())
}

fn detection(deployment: &str) -> OutlierDetection {
    with(deployment).unwrap().models[0]
        .deployment("d1")
        .unwrap()
        .outlier_detection
}

#[test]
fn failures_eject_by_default_and_latency_does_not() {
    let d = detection("");
    assert_eq!(d, OutlierDetection::default());
    assert_eq!(d.consecutive_failures, 5);
    assert_eq!(d.base_ejection, Duration::from_secs(10));
    assert_eq!(d.max_ejection, Duration::from_secs(300));
    assert_eq!(d.max_ejected_percent, 50);
    assert_eq!(d.latency_factor, 0);
    assert_eq!(d.restart_after_ejections, 3);
}

#[test]
fn settings_are_read() {
    let d = detection(
        "outlier_detection = { consecutive_failures = 2, base_ejection_secs = 1, max_ejection_secs = 4, max_ejected_percent = 100, latency_factor = 8, restart_after_ejections = 0 }",
    );
    assert_eq!(
        d,
        OutlierDetection {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(4),
            max_ejected_percent: 100,
            latency_factor: 8,
            restart_after_ejections: 0,
        }
    );
}

#[test]
fn the_longest_ejection_is_at_least_the_first() {
    let d = detection("outlier_detection = { base_ejection_secs = 600 }");
    assert_eq!(d.max_ejection, Duration::from_secs(600));
}

#[test]
fn bad_values_name_the_file_line_and_field() {
    for (table, field) in [
        ("consecutive_failures = -1", "consecutive_failures"),
        ("base_ejection_secs = 0", "base_ejection_secs"),
        ("max_ejected_percent = 101", "max_ejected_percent"),
        (
            "base_ejection_secs = 60, max_ejection_secs = 30",
            "max_ejection_secs",
        ),
        ("eject_after = 3", "eject_after"),
    ] {
        let e = with(&format!("outlier_detection = {{ {table} }}")).unwrap_err();
        assert!(
            e.contains("gateway.toml:6") && e.contains(field),
            "{table}: {e}"
        );
    }
}

fn retry(deployment: &str) -> RetryPolicy {
    with(deployment).unwrap().models[0]
        .deployment("d1")
        .unwrap()
        .retry
}

#[test]
fn retries_are_budgeted_and_only_safe_ones_by_default() {
    let r = retry("");
    assert_eq!(r, RetryPolicy::default());
    assert_eq!(r.attempts, 3);
    assert_eq!(r.budget_percent, 20);
    assert_eq!(r.min_retries_per_sec, 10);
    assert_eq!(r.backoff, Duration::from_millis(25));
    assert_eq!(r.max_backoff, Duration::from_millis(250));
    assert!(!r.idempotent);
}

#[test]
fn retry_settings_are_read() {
    let r = retry(
        "retry = { attempts = 5, budget_percent = 50, min_retries_per_sec = 0, backoff_ms = 0, max_backoff_ms = 0, idempotent = true }",
    );
    assert_eq!(
        r,
        RetryPolicy {
            attempts: 5,
            budget_percent: 50,
            min_retries_per_sec: 0,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            idempotent: true,
        }
    );
    assert_eq!(
        retry("retry = { backoff_ms = 500 }").max_backoff,
        Duration::from_millis(500),
        "unset, the longest wait is at least the first"
    );
}

#[test]
fn bad_retry_values_name_the_file_line_and_field() {
    for (table, field) in [
        ("attempts = 0", "attempts"),
        ("attempts = 11", "attempts"),
        ("budget_percent = 101", "budget_percent"),
        ("backoff_ms = 100, max_backoff_ms = 10", "max_backoff_ms"),
        ("idempotent = \"yes\"", "expected a boolean"),
        ("on = [\"5xx\"]", "on"),
    ] {
        let e = with(&format!("retry = {{ {table} }}")).unwrap_err();
        assert!(
            e.contains("gateway.toml:6") && e.contains(field),
            "{table}: {e}"
        );
    }
}
