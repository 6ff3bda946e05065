//! Membership and the replica registry on a real etcd: each node registers
//! itself and its ready replicas under a lease, every gateway routes to
//! every node's replicas, and a node that stops renewing its lease (here
//! frozen with SIGSTOP, its replica still alive) leaves every other
//! gateway's routing with its replicas; it joins again when it resumes.

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::Gateway;
use testkit::admin::api;
use testkit::etcd::{Etcd, node, push, shared_text};
use testkit::wait::eventually_async_within;
use tokio::time::Instant;

const TTL_SECS: u64 = 2;

/// One local deployment of one synthetic replica per node.
const MODEL: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
autoscaling = { min_replica = 1, max_replica = 1 }
[models.deployments.engine]
backend = "synthetic"
[[models.environments]]
name = "production"
deployment = "d"
"#;

/// The replica addresses in `gw`'s pool for `m/d`.
async fn instances(gw: &Gateway) -> BTreeSet<String> {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(status, 200, "{body}");
    body["replicas"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until every gateway in `gateways` routes to exactly `expected`.
async fn all_route_to(gateways: &[&Gateway], expected: &BTreeSet<String>, what: &str) {
    for gw in gateways {
        eventually_async_within(what, Duration::from_secs(TTL_SECS * 5), || async {
            instances(gw).await == *expected
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_routes_to_every_nodes_replicas_until_the_node_leaves() {
    let etcd = Etcd::start();
    let table = format!(
        "{}lease_ttl_secs = {TTL_SECS}\n",
        etcd.fleet_table("/fleet-replicas")
    );
    let gateways = [node("a", &table), node("b", &table), node("c", &table)];
    let (pushed, out) = push(gateways[0].config.path(), &shared_text(MODEL), &[]);
    assert!(pushed, "{out}");

    // Each node starts its own replica (placement by a fleet leader is not
    // built); every gateway routes to all three.
    for gw in &gateways {
        eventually_async_within(
            "each node's replica is ready",
            Duration::from_secs(20),
            || async { !instances(gw).await.is_empty() },
        )
        .await;
    }
    let mut everyone = BTreeSet::new();
    for gw in &gateways {
        everyone.insert(local_replica(gw).await);
    }
    assert_eq!(everyone.len(), 3, "one replica per node: {everyone:?}");
    all_route_to(
        &gateways.iter().collect::<Vec<_>>(),
        &everyone,
        "every gateway routes to all three",
    )
    .await;
    for gw in &gateways {
        let (status, _) = testkit::admin::predict(gw, "production").await;
        assert_eq!(status, 200);
    }

    // Node a freezes: it stops renewing its lease, though its replica is
    // alive. The others drop its replica within the TTL.
    let a_replica = local_replica(&gateways[0]).await;
    testkit::process::signal(gateways[0].proc.pid(), "STOP");
    let frozen = Instant::now();
    let rest: BTreeSet<String> = everyone
        .iter()
        .filter(|a| **a != a_replica)
        .cloned()
        .collect();
    all_route_to(
        &[&gateways[1], &gateways[2]],
        &rest,
        "a's replica leaves routing",
    )
    .await;
    println!(
        "a frozen: its replica left b and c after {:?} (TTL {TTL_SECS} s)",
        frozen.elapsed()
    );
    for gw in &gateways[1..] {
        let (status, _) = testkit::admin::predict(gw, "production").await;
        assert_eq!(status, 200);
    }

    // It resumes: it registers again and its replica returns everywhere.
    testkit::process::signal(gateways[0].proc.pid(), "CONT");
    all_route_to(
        &gateways.iter().collect::<Vec<_>>(),
        &everyone,
        "a's replica returns",
    )
    .await;
    drop(etcd);
}

/// The replica node `gw`'s own controller started (its pid is a child of
/// the gateway).
async fn local_replica(gw: &Gateway) -> String {
    let (_, body, _) = api(gw, "GET", "/v1/models/m/deployments/d", None).await;
    for instance in body["replicas"]["instances"].as_array().unwrap() {
        let address = instance["address"].as_str().unwrap();
        let info = testkit::get_json(&format!("http://{address}/info")).await;
        let pid = info["pid"].as_u64().unwrap() as u32;
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: u32 = parent
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        if ppid == gw.proc.pid() {
            return address.to_owned();
        }
    }
    panic!("no replica of {} is its child: {body}", gw.proc.pid());
}
