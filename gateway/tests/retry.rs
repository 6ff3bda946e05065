//! Retries against real processes: a busy replica's requests go to another
//! replica whatever the method; a failing replica's idempotent requests
//! do when the deployment opts in (and outlier detection ejects it); the
//! retry budget caps them; the response says how many attempts it took.
//! Each test prints the statuses its clients saw.

use std::collections::BTreeMap;

use testkit::fixture::{Deployment, Model};
use testkit::replica::{Behaviour, Replica};
use testkit::{Gateway, KEY, client, gateway, metric_sum, scrape};

/// One deployment over `replicas`, with these extra deployment keys.
fn config(replicas: &[&Replica], extra: &str) -> String {
    let addresses: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    Model::new("m1")
        .deployment(
            Deployment::fixed("d1", &addresses)
                .set("predict_concurrency", "64")
                .lines(extra),
        )
        .environment("production", "d1")
        .toml()
}

/// Sends `n` requests one after another; the count of each status, and of
/// each `x-gateway-attempts` value (1 when absent).
async fn send_n(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    n: usize,
) -> (BTreeMap<u16, usize>, BTreeMap<String, usize>) {
    let http = client();
    let (mut statuses, mut attempts) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..n {
        let resp = http
            .request(method.clone(), gw.url(path))
            .header("authorization", format!("Api-Key {KEY}"))
            .body(r#"{"text":"hi"}"#)
            .send()
            .await
            .expect("every request is answered");
        let made = testkit::header(&resp, "x-gateway-attempts");
        let made = if made.is_empty() { "1" } else { made };
        *attempts.entry(made.to_owned()).or_insert(0) += 1;
        *statuses.entry(resp.status().as_u16()).or_insert(0) += 1;
    }
    (statuses, attempts)
}

const PREDICT: &str = "/models/m1/production/predict";
/// A GET through the deployment's sync routes.
const SYNC_GET: &str = "/models/m1/production/sync/v1/items";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replicas_requests_go_to_another_replica_whatever_the_method() {
    let busy = Replica::start(Behaviour::Busy).await;
    let ok = Replica::start(Behaviour::Summary).await;
    let gw = gateway(&config(&[&busy, &ok], ""));

    let requests = 200;
    let (statuses, attempts) = send_n(&gw, reqwest::Method::POST, PREDICT, requests).await;
    println!("POSTs: statuses {statuses:?}; attempts {attempts:?}");
    assert_eq!(statuses.get(&200), Some(&requests), "{statuses:?}");
    let retried = attempts.get("2").copied().unwrap_or(0);
    assert!(retried > 0, "some went to the busy one first: {attempts:?}");
    assert_eq!(
        busy.received().await.len(),
        retried,
        "each was retried once"
    );
    assert_eq!(
        ok.bodies(),
        requests,
        "every body reached the other replica once"
    );

    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "igw_retries_total",
            &[("deployment", "d1"), ("reason", "busy")]
        ),
        retried as f64
    );
    assert_eq!(
        metric_sum(&metrics, "igw_replicas_ejected", &[("deployment", "d1")]),
        0.0,
        "busy is not broken"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_survive_a_failing_replica_when_the_deployment_opts_in() {
    let failing = Replica::start(Behaviour::Status(500)).await;
    let ok = [
        Replica::start(Behaviour::Summary).await,
        Replica::start(Behaviour::Summary).await,
    ];
    let gw = gateway(&config(
        &[&ok[0], &failing, &ok[1]],
        "retry = { idempotent = true }\noutlier_detection = { consecutive_failures = 3, base_ejection_secs = 600 }",
    ));

    let requests = 1_000;
    let (statuses, attempts) = send_n(&gw, reqwest::Method::GET, SYNC_GET, requests).await;
    let ok_count = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "GETs: statuses {statuses:?}; attempts {attempts:?}; success rate {:.2}%",
        ok_count as f64 * 100.0 / requests as f64
    );
    assert!(
        ok_count * 1000 >= requests * 999,
        "success rate of at least 99.9%: {statuses:?}"
    );
    assert_eq!(
        failing.received().await.len(),
        3,
        "ejected after its third failure"
    );
    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "igw_replica_ejections_total",
            &[("deployment", "d1")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "igw_retries_total",
            &[("deployment", "d1"), ("reason", "failure")]
        ),
        attempts.get("2").copied().unwrap_or(0) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_after_a_failure_and_the_budget_caps_retries() {
    let failing = Replica::start(Behaviour::Status(500)).await;
    let ok = Replica::start(Behaviour::Summary).await;
    // No ejection, so the failing replica keeps its share; no budget at
    // all for the GETs.
    let gw = gateway(&config(
        &[&failing, &ok],
        "retry = { idempotent = true, budget_percent = 0, min_retries_per_sec = 0 }\noutlier_detection = { consecutive_failures = 0 }",
    ));

    let (statuses, attempts) = send_n(&gw, reqwest::Method::POST, PREDICT, 100).await;
    println!("POSTs: statuses {statuses:?}; attempts {attempts:?}");
    assert!(statuses.get(&500).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert_eq!(attempts.keys().collect::<Vec<_>>(), ["1"], "never retried");

    let (statuses, attempts) = send_n(&gw, reqwest::Method::GET, SYNC_GET, 100).await;
    println!("GETs without budget: statuses {statuses:?}; attempts {attempts:?}");
    let failed = statuses.get(&500).copied().unwrap_or(0);
    assert!(failed > 0, "{statuses:?}");
    assert_eq!(attempts.keys().collect::<Vec<_>>(), ["1"]);
    let metrics = scrape(&gw).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "igw_retry_budget_exhausted_total",
            &[("deployment", "d1")]
        ),
        failed as f64,
        "each GET that failed asked for a retry and was refused"
    );
}
