//! Chaos: a zero-downtime binary upgrade under steady load. A gateway with
//! a warm local replica serves clients that keep connections alive and
//! clients that open a new connection per request; a new gateway process
//! (`serve --upgrade`) takes over (SIGQUIT to the old one) while they run.
//! No request may fail, no connection may be refused, and the replica must
//! be the same process before and after (no cold start), then stop with
//! the new gateway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use testkit::admin::{ADMIN, alive, api, eventually, replica_infos};
use testkit::gateway::{gateway_on_fixed_ports, start_upgrade};
use testkit::{Gateway, KEY, gateway_with, key_entry};
use tokio::sync::Mutex;

const BODY: &str = r#"{"text":"x"}"#;

/// Model `m`, deployment `d` (production): one warm local replica that
/// takes 5 ms per request, four at a time.
fn config() -> String {
    format!(
        r#"{admin}
[[models]]
id = "m"
[[models.deployments]]
id = "d"
predict_concurrency = 4
autoscaling = {{ min_replica = 1, max_replica = 1 }}
[models.deployments.engine]
backend = "synthetic"
fixed_ms = 5
[[models.environments]]
name = "production"
deployment = "d"
"#,
        admin = key_entry(ADMIN, "ops", "\"admin\"")
    )
}

/// The deployment's replicas as (replica id, pid).
async fn replicas(gw: &Gateway) -> Vec<(String, u32)> {
    replica_infos(gw, "m", "d")
        .await
        .iter()
        .map(|info| {
            let id = info["replica"].as_str().unwrap_or_default().to_owned();
            (id, info["pid"].as_u64().unwrap() as u32)
        })
        .collect()
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// Responses by status.
    statuses: BTreeMap<u16, usize>,
    /// 200s by the replica that answered (`x-replica-id`).
    replicas: BTreeMap<String, usize>,
    /// Connections refused.
    refused: usize,
    /// Other transport errors, described.
    errors: Vec<String>,
}

/// One client sending requests back to back until `stop`: on one kept-alive
/// connection (reopened only when the gateway closes it), or on a new
/// connection each time.
async fn client_loop(url: String, keep_alive: bool, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut builder = reqwest::Client::builder().no_proxy();
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let http = builder.build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sent = http
            .post(&url)
            .header("authorization", format!("Api-Key {KEY}"))
            .body(BODY)
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let replica = resp
                    .headers()
                    .get("x-replica-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match resp.bytes().await {
                    Ok(_) => Ok((status, replica)),
                    Err(e) => Err((false, format!("reading the body: {e:?}"))),
                }
            }
            Err(e) => Err((e.is_connect(), format!("{e:?}"))),
        };
        let mut seen = seen.lock().await;
        match outcome {
            Ok((status, replica)) => {
                *seen.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    *seen.replicas.entry(replica).or_default() += 1;
                }
            }
            Err((true, _)) => seen.refused += 1,
            Err((false, e)) => seen.errors.push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_fails_nothing_and_keeps_the_warm_replica() {
    // Ports written out: `serve --upgrade` takes them over by address.
    let mut gw = gateway_on_fixed_ports("", &config());
    eventually("the replica is ready", || async {
        let (_, body, _) = api(&gw, "GET", "/v1/models/m/deployments/d", None).await;
        body["status"] == "ACTIVE"
    })
    .await;
    let before = replicas(&gw).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let (replica_id, engine_pid) = before[0].clone();
    let old_pid = gw.proc.pid();
    println!("old gateway pid {old_pid}; replica {replica_id} pid {engine_pid}");

    // Steady load: two clients on kept-alive connections, two opening a
    // connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = gw.url("/models/m/production/predict");
    let clients: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| {
            tokio::spawn(client_loop(
                url.clone(),
                keep_alive,
                Arc::clone(&stop),
                Arc::clone(&seen),
            ))
        })
        .collect();
    eventually("the load is flowing", || async {
        seen.lock().await.statuses.values().sum::<usize>() >= 20
    })
    .await;

    // The upgrade: the new process waits for the handover, SIGQUIT starts it.
    let new = start_upgrade(&gw);
    gw.proc.signal("QUIT");
    let mut old = std::mem::replace(&mut gw.proc, new);
    // Blocking waits on a worker the load tasks do not need (two workers).
    let old_status = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(60)));
    let at_old_exit = seen.lock().await.statuses.values().sum::<usize>();
    let ready = tokio::task::block_in_place(|| testkit::gateway::read_ready(&mut gw.proc))
        .unwrap_or_else(|e| panic!("the new gateway is not ready: {e}"));
    // The same addresses: the sockets were handed over.
    assert_eq!((ready.predict, ready.admin), (old.addr, gw.admin));
    gw.proc.addr = ready.predict;
    // Keep the load on the new gateway alone for a while.
    eventually("the new gateway serves the load", || async {
        seen.lock().await.statuses.values().sum::<usize>() >= at_old_exit + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let seen = seen.lock().await;
    let total: usize = seen.statuses.values().sum::<usize>() + seen.refused + seen.errors.len();
    println!(
        "requests: {total}; statuses: {:?}; by replica: {:?}; refused: {}; other errors: {}; {at_old_exit} done when the old gateway exited",
        seen.statuses,
        seen.replicas,
        seen.refused,
        seen.errors.len()
    );
    for e in seen.errors.iter().take(5) {
        println!("  error: {e}");
    }
    assert_eq!(
        old_status.map(|s| s.code()),
        Some(Some(0)),
        "the old gateway exited 0"
    );
    assert_eq!(seen.refused, 0, "no connection refused");
    assert!(
        seen.errors.is_empty(),
        "no request failed: {:?}",
        seen.errors
    );
    assert_eq!(
        seen.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request answered 200"
    );
    assert_eq!(
        seen.replicas.keys().cloned().collect::<Vec<_>>(),
        vec![replica_id.clone()],
        "one replica served them all"
    );

    // The same process, now the new gateway's: no cold start.
    assert_eq!(replicas(&gw).await, vec![(replica_id, engine_pid)]);
    let (status, body, _) = api(&gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ACTIVE", "{body}");

    // SIGTERM on the new gateway leaves no engine behind.
    gw.proc.signal("TERM");
    let status = tokio::task::block_in_place(|| gw.proc.wait_exit(Duration::from_secs(30)));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "the new gateway exited 0"
    );
    eventually("the adopted replica has stopped", || async {
        !alive(engine_pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_without_a_new_gateway_waiting_changes_nothing() {
    let gw = gateway_with("", &config());
    eventually("the replica is ready", || async {
        let (_, body, _) = api(&gw, "GET", "/v1/models/m/deployments/d", None).await;
        body["status"] == "ACTIVE"
    })
    .await;
    let before = replicas(&gw).await;
    gw.proc.signal("QUIT");
    // It looks for a new process for 10 s (gateway::upgrade::SUCCESSOR_WAIT),
    // then logs `upgrade not started, still serving` and carries on. The
    // requests span that whole time and some after it: every one answered,
    // by the same replica.
    let url = gw.url("/models/m/production/predict");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut statuses = BTreeMap::<u16, usize>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline {
        let resp = http
            .post(&url)
            .header("authorization", format!("Api-Key {KEY}"))
            .body(BODY)
            .send()
            .await
            .expect("the gateway still answers");
        *statuses.entry(resp.status().as_u16()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("after SIGQUIT with nobody waiting: {statuses:?}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200]);
    assert_eq!(replicas(&gw).await, before, "the same replica serves");
    let (_, body, _) = api(&gw, "GET", "/v1/models/m/deployments/d", None).await;
    assert_eq!(body["status"], "ACTIVE", "{body}");
}
