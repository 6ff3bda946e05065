//! Chaos: `kill -9` one of two local replicas under steady load. Only the
//! requests in flight on it may fail (at most its concurrency slots); the
//! ones that come after go to the survivor or wait for the replacement,
//! which comes up. The test prints the statuses its clients saw.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;
use support::admin::{ADMIN, api, eventually};
use support::{Gateway, KEY, client, gateway_with, key_entry};

/// Requests one replica runs at once: the most that can be in flight on
/// the replica that is killed.
const SLOTS: usize = 4;
/// Concurrent clients: more than one replica's slots, so both are busy.
const CLIENTS: usize = 6;

fn config() -> String {
    format!(
        r#"{admin}
[[models]]
id = "m"
[[models.deployments]]
id = "d"
predict_concurrency = {SLOTS}
autoscaling = {{ min_replica = 2, max_replica = 2 }}
resources = {{ cpu = 0.5, memory = "256Mi" }}
[models.deployments.engine]
backend = "synthetic"
fixed_ms = 20
[[models.environments]]
name = "production"
deployment = "d"
"#,
        admin = key_entry(ADMIN, "ops", "\"admin\"")
    )
}

async fn deployment(gw: &Gateway) -> Value {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// What the clients saw: statuses (0 = no response at all) and the replica
/// that answered each 200.
#[derive(Default)]
struct Seen {
    statuses: std::sync::Mutex<BTreeMap<u16, usize>>,
    replicas: std::sync::Mutex<BTreeMap<String, usize>>,
    answered: AtomicUsize,
}

/// Clients posting one request after another until `stop`.
fn start_load(
    gw: &Gateway,
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (url, seen, stop) = (
                gw.url("/models/m/production/predict"),
                Arc::clone(seen),
                Arc::clone(stop),
            );
            tokio::spawn(async move {
                let http = client();
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
                                let replica = support::header(&r, "x-replica-id").to_owned();
                                *seen.replicas.lock().unwrap().entry(replica).or_insert(0) += 1;
                            }
                            r.status().as_u16()
                        }
                        Err(_) => 0,
                    };
                    *seen.statuses.lock().unwrap().entry(status).or_insert(0) += 1;
                    seen.answered.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_under_load_fails_at_most_its_in_flight_requests() {
    let gw = gateway_with("", &config());
    eventually("two replicas ready", || async {
        deployment(&gw).await["replicas"]["ready"] == 2
    })
    .await;
    let d = deployment(&gw).await;
    let victim = d["replicas"]["instances"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let info: Value = client()
        .get(format!("http://{victim}/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = info["pid"].as_u64().unwrap().to_string();
    let victim_id = info["replica"].as_str().unwrap().to_owned();

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&gw, &seen, &stop);
    eventually("load on both replicas", || async {
        seen.replicas.lock().unwrap().len() == 2 && seen.answered.load(Ordering::SeqCst) >= 100
    })
    .await;

    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

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
    let at_replacement = seen.answered.load(Ordering::SeqCst);
    // Responses it wrote before it died may still be read after the kill;
    // none can come once its replacement is up.
    let victim_served = seen.replicas.lock().unwrap().get(&victim_id).copied();
    eventually("load on the replacement", || async {
        seen.answered.load(Ordering::SeqCst) >= at_replacement + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let statuses = seen.statuses.lock().unwrap().clone();
    let replicas = seen.replicas.lock().unwrap().clone();
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
        victim_served,
        "nothing routed to the killed replica afterwards"
    );
    assert_eq!(
        replicas.len(),
        3,
        "the survivor, the victim and its replacement: {replicas:?}"
    );
}
