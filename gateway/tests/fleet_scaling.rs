//! A fleet's replicas on a real etcd: each node registers itself and its
//! ready replicas under a lease, every gateway routes to every node's
//! replicas, one leader (elected through etcd) sums the fleet's load and
//! places replicas on nodes, and each node runs what is placed on it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use testkit::Gateway;
use testkit::admin::{api, predict};
use testkit::etcd::{Etcd, PartitionedEtcd, node, push, shared_text};
use testkit::wait::{eventually_async_within, eventually_some_within};
use tokio::time::Instant;

const TTL_SECS: u64 = 2;

/// Long enough for a replica to start, a lease to run out and a leader
/// to place again, on a loaded machine.
const LIMIT: Duration = Duration::from_secs(30);

/// Model `m` with one local deployment `d` of synthetic replicas, whose
/// autoscaling table is `autoscaling`.
fn model(autoscaling: &str) -> String {
    format!(
        r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
autoscaling = {{ {autoscaling} }}
[models.deployments.engine]
backend = "synthetic"
fixed_ms = 20
[[models.environments]]
name = "production"
deployment = "d"
"#
    )
}

/// An etcd, three nodes `a`, `b`, `c` with a short lease, and `body`
/// pushed as the shared document.
async fn fleet(body: &str) -> (Etcd, [Gateway; 3]) {
    let etcd = Etcd::start();
    let table = format!(
        "{}lease_ttl_secs = {TTL_SECS}\n",
        etcd.fleet_table("/fleet-scaling")
    );
    let gateways = [node("a", &table), node("b", &table), node("c", &table)];
    let (pushed, out) = push(gateways[0].config.path(), &shared_text(body), &[]);
    assert!(pushed, "{out}");
    for gw in &gateways {
        eventually_async_within("the document is applied", LIMIT, || async {
            api(gw, "GET", "/v1/config", None).await.0 == 200
        })
        .await;
    }
    (etcd, gateways)
}

async fn deployment(gw: &Gateway) -> Value {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The replica addresses in `gw`'s pool for `m/d`.
async fn instances(gw: &Gateway) -> BTreeSet<String> {
    deployment(gw).await["replicas"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_owned())
        .collect()
}

/// The running replicas of `m/d` that `gw`'s own controller started
/// (their pids are its children).
async fn own_replicas(gw: &Gateway) -> BTreeSet<String> {
    let mut own = BTreeSet::new();
    for address in instances(gw).await {
        // A replica being stopped may refuse: it runs nowhere any more.
        let url = format!("http://{address}/info");
        let Ok(answer) = testkit::client().get(&url).send().await else {
            continue;
        };
        let info: serde_json::Value = answer.json().await.unwrap_or_default();
        let Some(pid) = info["pid"].as_u64() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1));
        if parent == Some(&gw.proc.pid().to_string()) {
            own.insert(address);
        }
    }
    own
}

/// Who leads, as `gw` knows it.
async fn leader(gw: &Gateway) -> Option<String> {
    let (_, body, _) = api(gw, "GET", "/v1/config", None).await;
    body["leader"].as_str().map(str::to_owned)
}

/// Waits until every gateway of `gateways` routes to the same `n`
/// replicas, and returns them.
async fn all_route_to_n(gateways: &[&Gateway], n: usize, what: &str) -> BTreeSet<String> {
    eventually_async_within(what, LIMIT, || async {
        let first = instances(gateways[0]).await;
        let mut same = first.len() == n;
        for gw in &gateways[1..] {
            same &= instances(gw).await == first;
        }
        same
    })
    .await;
    instances(gateways[0]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_spreads_replicas_and_a_node_that_stops_renewing_leaves() {
    let (_etcd, gateways) = fleet(&model("min_replica = 3, max_replica = 3")).await;
    let all: Vec<&Gateway> = gateways.iter().collect();
    // Three replicas in the fleet, one per node, every gateway routing to
    // all three.
    let everyone = all_route_to_n(&all, 3, "every gateway routes to the fleet's 3 replicas").await;
    for gw in &gateways {
        assert_eq!(own_replicas(gw).await.len(), 1, "one replica per node");
        assert_eq!(predict(gw, "production").await.0, 200);
    }

    // Node a freezes (SIGSTOP): it stops renewing its lease though its
    // replica is alive. The others drop that replica, and the leader (a
    // new one, if a led) places a third replica on b or c.
    let frozen_replica = own_replicas(&gateways[0]).await;
    testkit::process::signal(gateways[0].proc.pid(), "STOP");
    let frozen = Instant::now();
    let rest = [&gateways[1], &gateways[2]];
    for gw in rest {
        eventually_async_within("a's replica leaves routing", LIMIT, || async {
            instances(gw).await.is_disjoint(&frozen_replica)
        })
        .await;
    }
    println!(
        "a frozen: its replica left b and c after {:?} (TTL {TTL_SECS} s)",
        frozen.elapsed()
    );
    let replaced = all_route_to_n(&rest, 3, "the fleet runs 3 replicas again").await;
    assert!(replaced.is_disjoint(&frozen_replica), "{replaced:?}");
    assert_eq!(replaced.intersection(&everyone).count(), 2);
    for gw in rest {
        assert_eq!(predict(gw, "production").await.0, 200);
    }

    // a resumes: it registers again; the leader placed nothing on it any
    // more, so it stops its replica, and every gateway routes to b's and c's.
    testkit::process::signal(gateways[0].proc.pid(), "CONT");
    let after = all_route_to_n(&all, 3, "a follows the fleet again").await;
    assert_eq!(after, replaced);
    eventually_async_within("a stops the replica placed elsewhere", LIMIT, || async {
        own_replicas(&gateways[0]).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_zero_through_a_node_that_does_not_lead_wakes_the_fleet() {
    let (_etcd, gateways) = fleet(&model(
        "min_replica = 0, max_replica = 2, scale_down_delay = 300",
    ))
    .await;
    let leading =
        eventually_some_within("a leader is elected", LIMIT, || leader(&gateways[0])).await;
    let follower = gateways
        .iter()
        .zip(["a", "b", "c"])
        .find(|(_, name)| *name != leading)
        .map(|(gw, _)| gw)
        .unwrap();
    assert!(instances(follower).await.is_empty(), "scaled to zero");

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let url = follower.url("/models/m/production/predict");
        calls.push(tokio::spawn(async move {
            testkit::post(&url, None, Some(testkit::KEY), r#"{"text":"x"}"#)
                .await
                .status()
                .as_u16()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    println!(
        "20 requests at zero through a follower (leader {leading}): all 200 in {:?}",
        started.elapsed()
    );
    let running = instances(follower).await.len();
    assert!((1..=2).contains(&running), "{running} replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_load_is_replaced_and_nothing_fails() {
    let (_etcd, mut gateways) = fleet(&model("min_replica = 2, max_replica = 2")).await;
    let all: Vec<&Gateway> = gateways.iter().collect();
    all_route_to_n(&all, 2, "the fleet runs 2 replicas").await;
    let leading = leader(&gateways[0]).await.expect("a leader");
    let index = ["a", "b", "c"].iter().position(|n| *n == leading).unwrap();

    // Steady load through the two other gateways, one request after
    // another on each, while the leader is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for (i, gw) in gateways.iter().enumerate().filter(|(i, _)| *i != index) {
        let url = gw.url("/models/m/production/predict");
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = testkit::post(&url, None, Some(testkit::KEY), r#"{"text":"x"}"#)
                    .await
                    .status()
                    .as_u16();
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("gateway {i}: {status}");
                }
            }
        }));
    }
    let killed = gateways[index].proc.pid();
    testkit::process::signal(killed, "KILL");
    let at = Instant::now();
    let survivor = &gateways[(index + 1) % 3];
    let new_leader = eventually_some_within("a new leader", LIMIT, || async {
        leader(survivor).await.filter(|l| *l != leading)
    })
    .await;
    println!(
        "leader {leading} killed: {} leads after {:?} (TTL {TTL_SECS} s)",
        new_leader,
        at.elapsed()
    );
    let rest: Vec<&Gateway> = gateways
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, gw)| gw)
        .collect();
    all_route_to_n(&rest, 2, "the fleet runs 2 replicas again").await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{sent} requests through the survivors, {failed} failed");
    assert!(sent > 0);
    assert_eq!(failed, 0, "no request failed");
    let _ = gateways[index].proc.try_wait();
    gateways[index].proc.addr = testkit::dead_addr();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_holds_its_replicas_serves_and_catches_up() {
    // etcd in a network namespace: a reaches it over one veth link, b and
    // c over the other.
    let etcd = PartitionedEtcd::start();
    let table = |link| {
        format!(
            "{}lease_ttl_secs = {TTL_SECS}\n",
            etcd.fleet_table(link, "/fleet-partition")
        )
    };
    let gateways = [
        node("a", &table(0)),
        node("b", &table(1)),
        node("c", &table(1)),
    ];
    let document = shared_text(&model("min_replica = 3, max_replica = 3"));
    let (pushed, out) = push(gateways[1].config.path(), &document, &[]);
    assert!(pushed, "{out}");
    let all: Vec<&Gateway> = gateways.iter().collect();
    for gw in &all {
        eventually_async_within("the document is applied", LIMIT, || async {
            api(gw, "GET", "/v1/config", None).await.0 == 200
        })
        .await;
    }
    all_route_to_n(&all, 3, "the fleet runs 3 replicas").await;
    let a = &gateways[0];
    let held = own_replicas(a).await;
    assert_eq!(held.len(), 1);

    // The link goes down: a says it is stale and keeps serving.
    etcd.cut(0);
    let cut = Instant::now();
    eventually_async_within("a reports itself stale", LIMIT, || async {
        readyz(a).await.contains(r#""config":"stale""#)
    })
    .await;
    println!("a stale {:?} after the cut", cut.elapsed());
    for _ in 0..10 {
        assert_eq!(predict(a, "production").await.0, 200);
    }
    // The others drop a's replica and run the fleet's 3 without it.
    let rest = [&gateways[1], &gateways[2]];
    eventually_async_within("b and c run 3 replicas without a's", LIMIT, || async {
        let b = instances(rest[0]).await;
        b.len() == 3 && b.is_disjoint(&held) && instances(rest[1]).await == b
    })
    .await;
    for gw in rest {
        assert_eq!(predict(gw, "production").await.0, 200);
    }
    // a started and stopped nothing on its own.
    assert_eq!(own_replicas(a).await, held);
    // A change made while a is cut off.
    let qa = serde_json::json!({ "name": "qa", "deployment": "d" });
    let (status, body, _) = api(rest[0], "POST", "/v1/models/m/environments", Some(qa)).await;
    assert_eq!(status, 201, "{body}");

    // The link returns: a catches up with the change and the placement,
    // which has no replica on it any more.
    etcd.restore(0);
    eventually_async_within("a catches up", LIMIT, || async {
        !readyz(a).await.contains("stale")
    })
    .await;
    eventually_async_within("a applies the change made meanwhile", LIMIT, || async {
        predict(a, "environments/qa").await.0 == 200
    })
    .await;
    eventually_async_within("a stops the replica placed elsewhere", LIMIT, || async {
        own_replicas(a).await.is_empty()
    })
    .await;
    let after = all_route_to_n(&all, 3, "every gateway routes to the fleet's 3").await;
    assert!(after.is_disjoint(&held));
}

async fn readyz(gw: &Gateway) -> String {
    testkit::get_text(&gw.admin_url("/readyz")).await
}
