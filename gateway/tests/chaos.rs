//! Chaos with local replicas (real gateway and engine processes):
//! - `kill -9` one of two replicas under steady load: only the requests in
//!   flight on it may fail (at most its concurrency slots); the ones that
//!   come after go to the survivor or wait for the replacement, which comes
//!   up;
//! - SIGTERM under load: the requests in flight finish, the parked ones get
//!   503 with `Retry-After`, and no engine process is left.
//!
//! Each test prints the statuses its clients saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use testkit::admin::{ADMIN, alive, api, eventually, replica_infos};
use testkit::{Gateway, KEY, client, gateway_with, key_entry, metric_sum, scrape};

/// Requests one replica runs at once: the most that can be in flight on
/// the replica that is killed.
const SLOTS: usize = 4;
/// Concurrent clients: more than one replica's slots, so both are busy.
const CLIENTS: usize = 6;

/// Model `m`, deployment `d` with `replicas` local replicas whose every
/// prediction takes `fixed_ms`.
fn config(replicas: u32, fixed_ms: u32) -> String {
    format!(
        r#"{admin}
[[models]]
id = "m"
[[models.deployments]]
id = "d"
predict_concurrency = {SLOTS}
autoscaling = {{ min_replica = {replicas}, max_replica = {replicas} }}
resources = {{ cpu = 0.5, memory = "256Mi" }}
[models.deployments.engine]
backend = "synthetic"
fixed_ms = {fixed_ms}
[[models.environments]]
name = "production"
deployment = "d"
"#,
        admin = key_entry(ADMIN, "ops", "\"admin\"")
    )
}

/// The pid and replica id of the deployment's first replica, and its
/// address.
async fn first_replica(gw: &Gateway) -> (u32, String, String) {
    let d = deployment(gw).await;
    let address = d["replicas"]["instances"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = &replica_infos(gw, "m", "d").await[0];
    (
        info["pid"].as_u64().unwrap() as u32,
        info["replica"].as_str().unwrap().to_owned(),
        address,
    )
}

async fn deployment(gw: &Gateway) -> Value {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// What the clients have seen so far, for the test to wait on.
#[derive(Default)]
struct Progress {
    answered: AtomicUsize,
    /// 200s from the replica that is killed.
    from_victim: AtomicUsize,
}

/// One client's tally: statuses (0 = no response at all) and the replica
/// that answered each 200.
type Tally = (BTreeMap<u16, usize>, BTreeMap<String, usize>);

/// Clients posting one request after another until `stop`; each returns
/// its tally.
fn start_load(
    gw: &Gateway,
    victim: &str,
    progress: &Arc<Progress>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..CLIENTS)
        .map(|_| {
            let url = gw.url("/models/m/production/predict");
            let (victim, progress, stop) =
                (victim.to_owned(), Arc::clone(progress), Arc::clone(stop));
            tokio::spawn(async move {
                let http = client();
                let (mut statuses, mut replicas) = Tally::default();
                while !stop.load(Ordering::SeqCst) {
                    let resp = http
                        .post(&url)
                        .header("authorization", format!("Api-Key {KEY}"))
                        .body(r#"{"text":"x"}"#)
                        .send()
                        .await;
                    let status = match resp {
                        Ok(r) => {
                            if r.status() == 200 {
                                let replica = testkit::header(&r, "x-replica-id");
                                if replica == victim {
                                    progress.from_victim.fetch_add(1, Ordering::SeqCst);
                                }
                                *replicas.entry(replica.to_owned()).or_insert(0) += 1;
                            }
                            r.status().as_u16()
                        }
                        Err(_) => 0,
                    };
                    *statuses.entry(status).or_insert(0) += 1;
                    progress.answered.fetch_add(1, Ordering::SeqCst);
                }
                (statuses, replicas)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_under_load_fails_at_most_its_in_flight_requests() {
    let gw = gateway_with("", &config(2, 20));
    eventually("two replicas ready", || async {
        deployment(&gw).await["replicas"]["ready"] == 2
    })
    .await;
    let (pid, victim_id, victim) = first_replica(&gw).await;

    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&gw, &victim_id, &progress, &stop);
    eventually("load on both replicas", || async {
        progress.from_victim.load(Ordering::SeqCst) >= 10
            && progress.answered.load(Ordering::SeqCst) >= 100
    })
    .await;

    testkit::process::signal(pid, "KILL");

    // Its replacement comes up while the load goes on.
    eventually("the replacement is ready", || async {
        let d = deployment(&gw).await;
        d["replicas"]["crashes"] == 1
            && d["replicas"]["ready"] == 2
            && d["replicas"]["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["address"] != victim.as_str())
    })
    .await;
    let at_replacement = progress.answered.load(Ordering::SeqCst);
    // Responses it wrote before it died may still be read after the kill;
    // none can come once its replacement is up.
    let victim_served = progress.from_victim.load(Ordering::SeqCst);
    eventually("load on the replacement", || async {
        progress.answered.load(Ordering::SeqCst) >= at_replacement + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (mut statuses, mut replicas) = Tally::default();
    for task in load {
        let (s, r) = task.await.unwrap();
        s.into_iter()
            .for_each(|(k, n)| *statuses.entry(k).or_insert(0) += n);
        r.into_iter()
            .for_each(|(k, n)| *replicas.entry(k).or_insert(0) += n);
    }
    let total: usize = statuses.values().sum();
    let failed = total - statuses.get(&200).copied().unwrap_or(0);
    println!("{total} requests; statuses {statuses:?} (0 = no response); answered by {replicas:?}");
    assert!(
        failed <= SLOTS,
        "{failed} failed; at most the killed replica's {SLOTS} slots were in flight: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 502),
        "only 502s for the requests it took down: {statuses:?}"
    );
    assert_eq!(
        replicas.get(&victim_id).copied(),
        Some(victim_served),
        "nothing routed to the killed replica afterwards"
    );
    assert_eq!(
        replicas.len(),
        3,
        "the survivor, the victim and its replacement: {replicas:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_refuses_parked_ones_and_leaves_no_engine() {
    // One replica, each prediction a second long: its slots fill and the
    // rest of the load parks.
    let mut gw = gateway_with("", &config(1, 1000));
    eventually("the replica ready", || async {
        deployment(&gw).await["replicas"]["ready"] == 1
    })
    .await;
    let (pid, _, _) = first_replica(&gw).await;

    let parked = 3;
    let requests: Vec<_> = (0..SLOTS + parked)
        .map(|_| {
            let url = gw.url("/models/m/production/predict");
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .header("authorization", format!("Api-Key {KEY}"))
                    .body(r#"{"text":"x"}"#)
                    .send()
                    .await
                    .expect("every request is answered");
                let retry_after = !testkit::header(&resp, "retry-after").is_empty();
                (resp.status().as_u16(), retry_after)
            })
        })
        .collect();
    let labels = [("model", "m"), ("deployment", "d")];
    eventually("the slots full and the rest parked", || async {
        let metrics = scrape(&gw).await;
        metric_sum(&metrics, "igw_requests_in_flight", &labels) == SLOTS as f64
            && metric_sum(&metrics, "igw_queue_parked", &labels) == parked as f64
    })
    .await;

    gw.proc.signal("TERM");
    let mut statuses = BTreeMap::new();
    for request in requests {
        let (status, retry_after) = request.await.unwrap();
        assert!(status == 200 || retry_after, "a 503 says when to retry");
        *statuses.entry(status).or_insert(0) += 1;
    }
    println!("statuses at SIGTERM: {statuses:?}");
    assert_eq!(
        statuses.get(&200),
        Some(&SLOTS),
        "in flight: finished: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&503),
        Some(&parked),
        "parked: 503: {statuses:?}"
    );
    let exit = gw.proc.wait_exit(std::time::Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    eventually("no engine process left", || async { !alive(pid) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_replica_ejected_again_and_again_is_replaced() {
    // Both replicas fail every prediction while passing their probes; at
    // most one is ejected at a time, for a second, and the second ejection
    // in a row replaces it with a new process.
    let body = config(2, 1).replace(
        "fixed_ms = 1",
        "fixed_ms = 1\nerror_percent = 100",
    ).replace(
        "resources =",
        "outlier_detection = { consecutive_failures = 1, base_ejection_secs = 1, restart_after_ejections = 2 }\nresources =",
    );
    let gw = gateway_with("", &body);
    eventually("two replicas ready", || async {
        deployment(&gw).await["replicas"]["ready"] == 2
    })
    .await;
    let http = client();
    let mut statuses = BTreeMap::new();
    let mut replaced = false;
    // Requests keep the failures coming until a replica is replaced.
    for _ in 0..600 {
        let resp = http
            .post(gw.url("/models/m/production/predict"))
            .header("authorization", format!("Api-Key {KEY}"))
            .body(r#"{"text":"x"}"#)
            .send()
            .await
            .expect("answered");
        *statuses.entry(resp.status().as_u16()).or_insert(0) += 1;
        if deployment(&gw).await["replicas"]["crashes"] == 1 {
            replaced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("statuses until the replacement: {statuses:?}");
    assert!(
        replaced,
        "a replica was replaced: {}",
        deployment(&gw).await
    );
    let metrics = scrape(&gw).await;
    assert!(
        metric_sum(
            &metrics,
            "igw_replica_ejections_total",
            &[("deployment", "d")]
        ) >= 2.0,
        "ejected twice in a row first"
    );
    eventually("the replacement ready", || async {
        deployment(&gw).await["replicas"]["ready"] == 2
    })
    .await;
}
