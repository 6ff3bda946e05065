//! Outlier detection against real processes: a replica that answers 500 to
//! every prediction, and one that accepts and never answers, both passing
//! their readiness probes, among healthy ones. Live traffic must take each
//! out of routing within the configured number of failures, and the
//! status API and `/metrics` must say so. Each test prints the statuses
//! its clients saw.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use testkit::admin::{ADMIN, api};
use testkit::fixture::{Deployment, Model};
use testkit::replica::{Behaviour, Replica};
use testkit::{Gateway, KEY, client, gateway_with, key_entry, metric_sum, scrape};

const PREDICT: &str = "/models/m1/production/predict";

/// One deployment over `replicas`, with `outlier_detection` as given and
/// the admin key for the status API.
fn config(replicas: &[&Replica], outlier_detection: &str) -> String {
    let addresses: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    let model = Model::new("m1")
        .deployment(
            Deployment::fixed("d1", &addresses)
                .set("predict_concurrency", "64")
                .set("outlier_detection", &format!("{{ {outlier_detection} }}")),
        )
        .environment("production", "d1");
    format!("{}{}", key_entry(ADMIN, "ops", "\"admin\""), model.toml())
}

/// Sends `n` predictions one after another; the count of each status, and
/// the longest any took.
async fn predict_n(gw: &Gateway, n: usize) -> (BTreeMap<u16, usize>, Duration) {
    let http = client();
    let mut seen = BTreeMap::new();
    let mut longest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let status = http
            .post(gw.url(PREDICT))
            .header("authorization", format!("Api-Key {KEY}"))
            .body(r#"{"text":"hi"}"#)
            .send()
            .await
            .expect("every request is answered")
            .status()
            .as_u16();
        longest = longest.max(started.elapsed());
        *seen.entry(status).or_insert(0) += 1;
    }
    (seen, longest)
}

/// The health the status API reports for the replica at `addr`.
async fn health_of(gw: &Gateway, replica: &Replica) -> (String, Value) {
    let (status, d, _) = api(gw, "GET", "/v1/models/m1/deployments/d1", None).await;
    assert_eq!(status, 200, "{d}");
    let instance = d["replicas"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == replica.addr.to_string())
        .unwrap_or_else(|| panic!("{} in {d}", replica.addr))
        .clone();
    (instance["health"].as_str().unwrap().to_owned(), instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_every_prediction_is_ejected_within_the_threshold() {
    let healthy = [
        Replica::start(Behaviour::Summary).await,
        Replica::start(Behaviour::Summary).await,
    ];
    let failing = Replica::start(Behaviour::Status(500)).await;
    let gw = gateway_with(
        "",
        &config(
            &[&healthy[0], &failing, &healthy[1]],
            "consecutive_failures = 3, base_ejection_secs = 600",
        ),
    );

    let requests = 600;
    let (seen, _) = predict_n(&gw, requests).await;
    let ok = seen.get(&200).copied().unwrap_or(0);
    println!(
        "statuses seen over {requests} requests: {seen:?}; success rate {:.2}%",
        ok as f64 * 100.0 / requests as f64
    );
    assert_eq!(
        seen.get(&500).copied().unwrap_or(0),
        3,
        "exactly the threshold's failures reach clients (sequential requests): {seen:?}"
    );
    assert_eq!(ok + 3, requests, "{seen:?}");
    assert_eq!(
        failing.received().await.len(),
        3,
        "nothing routed to it after its ejection"
    );

    let (health, instance) = health_of(&gw, &failing).await;
    assert_eq!(health, "EJECTED", "{instance}");
    assert_eq!(instance["ejections_in_a_row"], 1, "{instance}");
    for r in &healthy {
        assert_ne!(health_of(&gw, r).await.0, "EJECTED");
    }
    let metrics = scrape(&gw).await;
    let labels = [("model", "m1"), ("deployment", "d1")];
    assert_eq!(metric_sum(&metrics, "igw_replicas_ejected", &labels), 1.0);
    assert_eq!(
        metric_sum(
            &metrics,
            "igw_replica_ejections_total",
            &[("deployment", "d1"), ("reason", "failures")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stalls_while_passing_probes_is_ejected() {
    let healthy = Replica::start(Behaviour::Summary).await;
    let stalled = Replica::start(Behaviour::Silent).await;
    let gw = gateway_with(
        "upstream_first_byte_timeout_secs = 1",
        &config(
            &[&stalled, &healthy],
            "consecutive_failures = 2, base_ejection_secs = 600",
        ),
    );

    let requests = 40;
    let (seen, longest) = predict_n(&gw, requests).await;
    println!("statuses seen over {requests} requests: {seen:?}; longest {longest:?}");
    assert_eq!(
        seen.get(&504).copied().unwrap_or(0),
        2,
        "two timeouts, then it is out of routing: {seen:?}"
    );
    assert_eq!(
        seen.get(&200).copied().unwrap_or(0),
        requests - 2,
        "{seen:?}"
    );
    // The first-byte timeout (1 s), not the replica's silence (30 s), is
    // what a client waited at most.
    assert!(longest < Duration::from_secs(10), "{longest:?}");
    assert_eq!(health_of(&gw, &stalled).await.0, "EJECTED");
    assert_eq!(stalled.received().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_replica_returns_after_its_backoff_once_a_probe_passes() {
    let healthy = Replica::start(Behaviour::Summary).await;
    let failing = Replica::start(Behaviour::Status(503)).await;
    let gw = gateway_with(
        "",
        &config(
            &[&failing, &healthy],
            "consecutive_failures = 1, base_ejection_secs = 1",
        ),
    );
    let (seen, _) = predict_n(&gw, 20).await;
    assert_eq!(seen.get(&503).copied().unwrap_or(0), 1, "{seen:?}");
    assert_eq!(health_of(&gw, &failing).await.0, "EJECTED");
    // Its probe passes: back in routing once the second is over.
    testkit::admin::eventually("the replica's return", || async {
        health_of(&gw, &failing).await.0 == "READY"
    })
    .await;
    let (seen, _) = predict_n(&gw, 40).await;
    assert_eq!(
        seen.get(&503).copied().unwrap_or(0),
        1,
        "routed to again, and ejected again at its first failure: {seen:?}"
    );
    let (health, instance) = health_of(&gw, &failing).await;
    assert_eq!(health, "EJECTED");
    assert_eq!(
        instance["ejections_in_a_row"], 2,
        "the second in a row (twice as long): {instance}"
    );
}
