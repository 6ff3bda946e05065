//! Local replicas end to end: the gateway starts real engine processes
//! (synthetic backend), parks requests while they start, scales them to
//! zero, replaces crashed ones, respects node capacity and leaves nothing
//! running when it exits.

use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use testkit::admin::{ADMIN, alive, api, eventually, replica_infos};
use testkit::{Gateway, KEY, client, gateway_with, header, key_entry, post};

/// A valid predict body.
const BODY: &str = r#"{"text":"x"}"#;

/// A model `m` with one local deployment `d` (production), whose `[engine]`
/// and extra deployment keys are given, plus any more TOML after it.
fn local_model(deployment: &str, engine: &str, more: &str) -> String {
    format!(
        r#"{admin}
[[models]]
id = "m"
[[models.deployments]]
id = "d"
{deployment}
[models.deployments.engine]
backend = "synthetic"
{engine}
[[models.environments]]
name = "production"
deployment = "d"
{more}"#,
        admin = key_entry(ADMIN, "ops", "\"admin\"")
    )
}

async fn deployment(gw: &Gateway, id: &str) -> Value {
    let (status, body, _) = api(gw, "GET", &format!("/v1/models/m/deployments/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The pids of the deployment's replicas, from each replica's `/info`.
async fn replica_pids(gw: &Gateway, id: &str) -> Vec<u32> {
    replica_infos(gw, "m", id)
        .await
        .iter()
        .map(|info| info["pid"].as_u64().unwrap() as u32)
        .collect()
}

async fn all_gone(pids: &[u32]) -> bool {
    for _ in 0..100 {
        if !pids.iter().any(|&p| alive(p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn predict(gw: &Gateway, body: &str) -> reqwest::Response {
    post(
        &gw.url("/models/m/production/predict"),
        None,
        Some(KEY),
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_wakes_a_deployment_from_zero_and_every_request_succeeds() {
    // Three seconds of model loading; two replicas of four slots each.
    let gw = gateway_with(
        "",
        &local_model(
            "predict_concurrency = 4\nautoscaling = { min_replica = 0, max_replica = 2, concurrency_target = 4 }\nqueue = { max_length = 500, timeout_secs = 60 }",
            "load_delay_ms = 3000\nfixed_ms = 5",
            "",
        ),
    );
    let d = deployment(&gw, "d").await;
    assert_eq!(d["status"], "SCALED_TO_ZERO", "{d}");
    assert!(replica_pids(&gw, "d").await.is_empty());

    let started = Instant::now();
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let url = gw.url("/models/m/production/predict");
            tokio::spawn(async move {
                let resp = post(&url, None, Some(KEY), &format!(r#"{{"text":"{i}"}}"#)).await;
                let replica = header(&resp, "x-replica-id").to_owned();
                (resp.status().as_u16(), replica)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in burst {
        statuses.push(task.await.unwrap());
    }
    let waited = started.elapsed();
    assert!(
        statuses
            .iter()
            .all(|(s, r)| *s == 200 && r.starts_with("m/d#")),
        "{statuses:?}"
    );
    // The replica could not have answered before it had loaded: the burst
    // waited for it instead of failing.
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    let d = deployment(&gw, "d").await;
    assert_eq!(d["status"], "ACTIVE", "{d}");
    assert_eq!(d["queue"]["parked"], 0, "{d}");
    assert!(d["queue"]["parked_total"].as_u64().unwrap() >= 1, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_replicas_scale_back_to_zero_and_wake_calls_start_one() {
    let gw = gateway_with(
        "",
        &local_model(
            "autoscaling = { min_replica = 0, max_replica = 1, autoscaling_window = 10, scale_down_delay = 0 }",
            "",
            "",
        ),
    );
    let resp = client()
        .post(gw.url("/models/m/production/wake"))
        .header("authorization", format!("Api-Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    eventually("woken by /wake", || async {
        deployment(&gw, "d").await["status"] == "ACTIVE"
    })
    .await;
    let pids = replica_pids(&gw, "d").await;
    assert_eq!(pids.len(), 1);
    assert_eq!(predict(&gw, BODY).await.status(), 200);
    // No traffic and no scale-down delay: back to zero within the window.
    eventually("scaled to zero", || async {
        deployment(&gw, "d").await["status"] == "SCALED_TO_ZERO"
    })
    .await;
    assert!(all_gone(&pids).await, "the idle replica was stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limits_answer_429_at_once_and_503_at_the_timeout() {
    // One slot, taken for 4 s by the first request; two may wait, for 1 s.
    let gw = gateway_with(
        "max_parked_bytes = 4000",
        &local_model(
            "autoscaling = { min_replica = 1, max_replica = 1 }\nqueue = { max_length = 2, timeout_secs = 1 }",
            "fixed_ms = 4000",
            r#"
[[models.deployments]]
id = "strict"
autoscaling = { min_replica = 1, max_replica = 1 }
queue = { backpressure = "REJECT_ON_FULL" }
[models.deployments.engine]
backend = "synthetic"
fixed_ms = 4000
"#,
        ),
    );
    eventually("replicas ready", || async {
        deployment(&gw, "d").await["status"] == "ACTIVE"
            && deployment(&gw, "strict").await["status"] == "ACTIVE"
    })
    .await;

    let busy = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() }
    });
    testkit::until_in_flight(&gw, "d", 1).await;
    let parked: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url("/models/m/production/predict");
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = post(&url, None, Some(KEY), BODY).await;
                let retry_after = header(&resp, "retry-after").to_owned();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (started.elapsed(), retry_after, body)
            })
        })
        .collect();
    eventually("two parked", || async {
        deployment(&gw, "d").await["queue"]["parked"] == 2
    })
    .await;
    // The queue is full: refused (429), where a request that waited out the
    // timeout would get 503.
    let full = predict(&gw, BODY).await;
    assert_eq!(full.status(), 429);
    assert!(full.json::<Value>().await.unwrap()["error"].is_string());
    for task in parked {
        let (waited, retry_after, body) = task.await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("queue timeout"),
            "{body}"
        );
        assert_eq!(retry_after, "5");
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }
    assert_eq!(
        busy.await.unwrap(),
        200,
        "the request in flight was not disturbed"
    );
    let d = deployment(&gw, "d").await;
    assert_eq!(d["queue"]["timed_out"], 2, "{d}");

    // REJECT_ON_FULL: the second request is refused while the first runs.
    let url = gw.url("/models/m/deployment/strict/predict");
    let first =
        tokio::spawn(async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() });
    testkit::until_in_flight(&gw, "strict", 1).await;
    let second = post(
        &gw.url("/models/m/deployment/strict/predict"),
        None,
        Some(KEY),
        BODY,
    )
    .await;
    assert_eq!(second.status(), 429);
    assert_eq!(first.await.unwrap(), 200);

    // A body larger than the parked-bytes budget cannot wait.
    let busy = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() }
    });
    testkit::until_in_flight(&gw, "d", 1).await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(5000));
    let resp = predict(&gw, &big).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("bytes"), "{body}");
    assert_eq!(busy.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_is_counted_and_frees_its_place() {
    let gw = gateway_with(
        "",
        &local_model(
            "autoscaling = { min_replica = 1, max_replica = 1 }\nqueue = { max_length = 1, timeout_secs = 30 }",
            "fixed_ms = 3000",
            "",
        ),
    );
    eventually("ready", || async {
        deployment(&gw, "d").await["status"] == "ACTIVE"
    })
    .await;
    let busy = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() }
    });
    testkit::until_in_flight(&gw, "d", 1).await;
    let leaving = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await }
    });
    eventually("parked", || async {
        deployment(&gw, "d").await["queue"]["parked"] == 1
    })
    .await;
    leaving.abort();
    eventually("counted as 499 and out of the queue", || async {
        let d = deployment(&gw, "d").await;
        d["queue"]["client_closed"] == 1 && d["queue"]["parked"] == 0
    })
    .await;
    // Its place is free again: the queue (length 1) takes a new request.
    let next = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await.status().as_u16() }
    });
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(next.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_replica_is_replaced_and_never_routed_to() {
    let gw = gateway_with(
        "",
        &local_model("autoscaling = { min_replica = 1, max_replica = 1 }", "", ""),
    );
    eventually("ready", || async {
        deployment(&gw, "d").await["status"] == "ACTIVE"
    })
    .await;
    let first = predict(&gw, BODY).await;
    let old_replica = header(&first, "x-replica-id").to_owned();
    let pids = replica_pids(&gw, "d").await;
    let old_addr = deployment(&gw, "d").await["replicas"]["instances"][0]["address"].clone();
    testkit::process::signal(pids[0], "KILL");
    // The controller sees the exit and takes the replica out of routing.
    eventually("crash noticed", || async {
        let d = deployment(&gw, "d").await;
        d["replicas"]["crashes"] == 1
            && d["replicas"]["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["address"] != old_addr)
    })
    .await;
    // From then on, requests wait for the replacement instead of failing.
    for _ in 0..5 {
        let resp = predict(&gw, BODY).await;
        assert_eq!(resp.status(), 200);
        let replica = header(&resp, "x-replica-id");
        assert!(
            replica.starts_with("m/d#") && replica != old_replica,
            "{replica}"
        );
    }
    let d = deployment(&gw, "d").await;
    assert_eq!(
        (d["status"].as_str(), &d["replicas"]["ready"]),
        (Some("ACTIVE"), &Value::from(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_exit_leaves_no_replica_running() {
    for (signal, name) in [("TERM", "graceful"), ("KILL", "killed")] {
        let mut gw = gateway_with(
            "",
            &local_model(
                "autoscaling = { min_replica = 2, max_replica = 2 }\nresources = { cpu = 0.5, memory = \"256Mi\" }",
                "",
                "",
            ),
        );
        eventually("two ready", || async {
            deployment(&gw, "d").await["replicas"]["ready"] == 2
        })
        .await;
        let pids = replica_pids(&gw, "d").await;
        assert_eq!(pids.len(), 2);
        assert!(pids.iter().all(|&p| alive(p)));
        gw.proc.signal(signal);
        assert!(
            gw.proc.wait_exit(Duration::from_secs(20)).is_some(),
            "{name}: gateway exited"
        );
        assert!(
            all_gone(&pids).await,
            "{name}: replicas {pids:?} outlived the gateway"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_does_not_fit_stays_pending_with_a_reason() {
    let gw = gateway_with(
        "",
        &format!(
            "[node]\ncpus = 2\nmemory = \"4Gi\"\n{}",
            local_model(
                "autoscaling = { min_replica = 1, max_replica = 1 }\ninstance_type = \"1x2\"",
                "",
                r#"
[[models.deployments]]
id = "big"
instance_type = "2x2"
autoscaling = { min_replica = 1, max_replica = 1 }
[models.deployments.engine]
backend = "synthetic"

[[models.deployments]]
id = "gpu"
instance_type = "L4:1x2"
autoscaling = { min_replica = 1, max_replica = 1 }
[models.deployments.engine]
backend = "synthetic"
"#,
            )
        ),
    );
    eventually("d runs, big and gpu are pending", || async {
        let (d, big, gpu) = (
            deployment(&gw, "d").await,
            deployment(&gw, "big").await,
            deployment(&gw, "gpu").await,
        );
        d["status"] == "ACTIVE"
            && big["replicas"]["pending"] == 1
            && gpu["replicas"]["pending"] == 1
    })
    .await;
    let big = deployment(&gw, "big").await;
    assert_eq!(big["status"], "DEPLOYING", "{big}");
    let reason = big["replicas"]["pending_reason"].as_str().unwrap();
    assert!(
        reason.contains("CPU") && reason.contains("1 of 2"),
        "{reason}"
    );
    let gpu = deployment(&gw, "gpu").await;
    let reason = gpu["replicas"]["pending_reason"].as_str().unwrap();
    assert!(reason.contains("L4"), "{reason}");
    assert_eq!(gpu["replicas"]["ready"], 0);
}

/// A deployment whose replicas can never start (here: a model file that is
/// not a model) is marked failed after `max_failed_starts` tries: its status
/// says so with the engine's own error, a parked request is answered 503
/// with that reason, new ones are refused at once, and no more replicas
/// are started, until a config edit fixes it and it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_cannot_start_fails_fast_and_recovers_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b"not a model").unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
    let broken = format!("backend = \"onnx\"\nmodel = \"{}\"", model.display());
    let config =
        local_model("", "", "").replace("backend = \"synthetic\"\n", &format!("{broken}\n"));
    let gw = gateway_with("max_failed_starts = 2", &config);

    // Parks (no replica yet), then is answered once the deployment fails.
    let parked = tokio::spawn({
        let url = gw.url("/models/m/production/predict");
        async move { post(&url, None, Some(KEY), BODY).await }
    });
    let resp = parked.await.unwrap();
    assert_eq!(resp.status(), 503);
    let error: Value = resp.json().await.unwrap();
    let error = error["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("cannot start its replicas") && error.contains("2 replica starts failed"),
        "{error}"
    );
    let d = deployment(&gw, "d").await;
    assert_eq!(d["status"], "DEPLOY_FAILED", "{d}");
    let last = d["replicas"]["last_error"].as_str().unwrap();
    // The engine's own last words (here: it cannot load the model).
    assert!(last.contains("error: model"), "{last}");
    assert_eq!(d["replicas"]["crashes"], 2, "no start after it failed: {d}");
    // New requests: refused at once, with the reason.
    let resp = predict(&gw, BODY).await;
    assert_eq!(resp.status(), 503);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("2 replica starts failed")
    );

    // A hand edit that fixes the deployment: it starts again and serves.
    let fixed = testkit::admin::file(&gw).replace(&broken, "backend = \"synthetic\"");
    std::fs::write(gw.config.path(), fixed).unwrap();
    eventually("the fixed deployment serves", || async {
        predict(&gw, BODY).await.status() == 200
    })
    .await;
    assert_eq!(deployment(&gw, "d").await["status"], "ACTIVE");
}
