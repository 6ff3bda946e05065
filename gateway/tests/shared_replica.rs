//! One replica, several gateways: the replica enforces its own
//! `predict_concurrency` whoever sends, and refuses the excess as busy
//! (503 with `Retry-After`) before reading the body; each gateway takes
//! that as "slot busy" and waits for the replica, so no client sees an
//! error. Each gateway believes it has the replica's one slot to itself.

use std::net::SocketAddr;

use testkit::fixture::static_model;
use testkit::{Gateway, KEY, client, gateway, metric_sum};

const PER_GATEWAY: usize = 5;

/// A replica of one slot, 30 ms a prediction, with `queue_size` waiting
/// places, and three gateways that each give it one slot.
fn shared(queue_size: &str) -> (testkit::Proc, [Gateway; 3]) {
    let engine = testkit::engine(
        "shared",
        &[
            "--fixed-ms",
            "30",
            "--predict-concurrency",
            "1",
            "--queue-size",
            queue_size,
        ],
    );
    let config = static_model("m1", "d1", &[engine.addr], 1);
    let gateways = [gateway(&config), gateway(&config), gateway(&config)];
    (engine, gateways)
}

/// `PER_GATEWAY` requests through each gateway, all at once: the statuses,
/// and how many took more than one attempt. Bodies of 50 KB, near the most
/// a gateway holds to retry: a busy answer comes before the replica reads
/// them, and the unread bytes must not cost the answer.
async fn send_through_all(gateways: &[Gateway]) -> (Vec<u16>, usize) {
    let http = client();
    let mut calls = Vec::new();
    for gw in gateways {
        for i in 0..PER_GATEWAY {
            let (http, url) = (http.clone(), gw.url("/models/m1/production/predict"));
            calls.push(tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .header("authorization", format!("Api-Key {KEY}"))
                    .body(format!(
                        r#"{{"text":"request {i} {}"}}"#,
                        "x".repeat(50_000)
                    ))
                    .send()
                    .await
                    .expect("every request is answered");
                let retried = !testkit::header(&resp, "x-gateway-attempts").is_empty();
                (resp.status().as_u16(), retried)
            }));
        }
    }
    let (mut statuses, mut retried) = (Vec::new(), 0);
    for call in calls {
        let (status, more) = call.await.unwrap();
        statuses.push(status);
        retried += usize::from(more);
    }
    println!("statuses {statuses:?}; {retried} requests took more than one attempt");
    (statuses, retried)
}

/// What the replica counted: the most predictions it ran at once, the
/// requests it refused as busy, and those it answered 200.
async fn replica_counts(addr: SocketAddr) -> (u64, f64, f64) {
    let info = testkit::get_json(&format!("http://{addr}/info")).await;
    let metrics = testkit::get_text(&format!("http://{addr}/metrics")).await;
    let refused = metric_sum(&metrics, "igw_engine_rejected_total", &[]);
    let served = metric_sum(&metrics, "igw_engine_requests_total", &[("status", "200")]);
    println!("replica: {info}; refused {refused} attempts as busy");
    (info["peak_running"].as_u64().unwrap(), refused, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_never_run_two_predictions_at_once_on_a_replica_of_one_slot() {
    // No queue: every request that arrives while one runs is refused busy.
    let (engine, gateways) = shared("0");
    let (statuses, retried) = send_through_all(&gateways).await;
    assert!(
        statuses.iter().all(|&s| s == 200),
        "no client sees an error: {statuses:?}"
    );
    let (peak, refused, served) = replica_counts(engine.addr).await;
    assert_eq!(peak, 1, "never two at once");
    assert!(
        refused > 0.0,
        "the gateways did overlap: the replica refused some as busy"
    );
    assert!(retried > 0, "and those were tried again");
    assert_eq!(served as usize, 3 * PER_GATEWAY, "each ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_queue_for_the_other_gateways_a_shared_replica_refuses_none() {
    // Two waiting places: one for each other gateway's slot. Requests wait
    // their turn at the replica, first come first served.
    let (engine, gateways) = shared("2");
    let (statuses, retried) = send_through_all(&gateways).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let (peak, refused, served) = replica_counts(engine.addr).await;
    assert_eq!(peak, 1, "never two at once");
    assert_eq!(refused, 0.0, "every request found a place");
    assert_eq!(retried, 0);
    assert_eq!(served as usize, 3 * PER_GATEWAY);
}
