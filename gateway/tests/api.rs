//! The management API on the admin listener: the gateway process, real
//! engine replicas and the real config file, edited by the API and by hand.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, KEY, Proc, client, engine, header, key_entry, post};

const ADMIN: &str = "igw_admin_key";

/// A model with deployments `a` (production) and `b` (staging), each with
/// one replica, and an operator's comments that edits must keep.
fn setup() -> (Gateway, Proc, Proc) {
    setup_with("")
}

/// [`setup`] with extra `[server]` lines.
fn setup_with(server: &str) -> (Gateway, Proc, Proc) {
    let (a, b) = (engine("ra", &[]), engine("rb", &[]));
    let body = format!(
        r#"{admin}
# The operator's notes: keep me.
[[models]]
id = "m"
name = "embedder"

[[models.deployments]]
id = "a"   # the first one
replicas = {{ source = "static", addresses = ["{a}"] }}

[[models.deployments]]
id = "b"
replicas = {{ source = "static", addresses = ["{b}"] }}

[[models.environments]]
name = "production"
deployment = "a"

[[models.environments]]
name = "staging"
deployment = "b"
"#,
        admin = key_entry(ADMIN, "ops", "\"admin\""),
        a = a.addr,
        b = b.addr
    );
    (support::gateway_with(server, &body), a, b)
}

/// Calls the API with the admin key; returns status, body and ETag.
async fn api(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value, String) {
    call(gw, method, path, body, Some(ADMIN), None).await
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
    if_match: Option<&str>,
) -> (u16, Value, String) {
    let url = format!("http://{}{path}", gw.admin);
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(key) = key {
        req = req.header("authorization", format!("Api-Key {key}"));
    }
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let etag = header(&resp, "etag").to_owned();
    let value = resp.json().await.unwrap_or(Value::Null);
    (status, value, etag)
}

/// (status, deployment that answered) of one predict call.
async fn predict(gw: &Gateway, target: &str) -> (u16, String) {
    let resp = post(
        &gw.url(&format!("/models/m/{target}/predict")),
        None,
        Some(KEY),
        r#"{"text":"x"}"#,
    )
    .await;
    (
        resp.status().as_u16(),
        header(&resp, "x-deployment-id").to_owned(),
    )
}

fn file(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.config.path()).unwrap()
}

/// Polls `check` until it holds or 20 s pass.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn reads_need_an_admin_key_and_report_status_and_revision() {
    let (gw, _a, _b) = setup();
    let (status, body, _) = call(&gw, "GET", "/v1/models", None, None, None).await;
    assert_eq!((status, body["error"].is_string()), (401, true));
    let (status, _, _) = call(&gw, "GET", "/v1/models", None, Some(KEY), None).await;
    assert_eq!(status, 403);

    let (status, body, etag) = api(&gw, "GET", "/v1/models/m", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(etag.starts_with('"'), "ETag {etag:?}");
    assert_eq!(body["name"], "embedder");
    let a = &body["deployments"][0];
    assert_eq!(
        (a["id"].as_str(), a["name"].as_str()),
        (Some("a"), Some("deployment-1"))
    );
    assert_eq!(a["environments"], json!(["production"]));
    // The health checker probes the replica: it becomes ACTIVE, 1 of 1 ready.
    eventually("deployment a ACTIVE", || async {
        let (_, d, _) = api(&gw, "GET", "/v1/models/m/deployments/a", None).await;
        d["status"] == "ACTIVE" && d["replicas"] == json!({ "desired": 1, "ready": 1 })
    })
    .await;
    let (status, d, _) = api(&gw, "GET", "/v1/models/m/deployments/production", None).await;
    assert_eq!((status, d["id"].as_str()), (200, Some("a")));
    let (status, _, _) = api(&gw, "GET", "/v1/models/m/deployments/nope", None).await;
    assert_eq!(status, 404);
    let (status, _, _) = api(&gw, "GET", "/v1/models/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn autoscaling_edits_keep_comments_and_honour_if_match() {
    let (gw, _a, _b) = setup();
    let (_, _, etag) = api(&gw, "GET", "/v1/models/m", None).await;
    let patch = json!({ "min_replica": 1, "max_replica": 3 });
    let (status, body, new_etag) = call(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(patch.clone()),
        Some(ADMIN),
        Some(&etag),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
    assert_ne!(new_etag, etag);
    let text = file(&gw);
    assert!(text.contains("# The operator's notes: keep me."), "{text}");
    assert!(text.contains("# the first one"), "{text}");
    let config = config::load_str(&text, "edited").unwrap();
    let a = config.models[0].deployment("a").unwrap();
    assert_eq!(
        (a.autoscaling.min_replica, a.autoscaling.max_replica),
        (1, 3)
    );

    // The same values again change nothing; a stale revision gets 412.
    let (status, body, _) = api(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(patch),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("UNCHANGED")));
    let stale = json!({ "max_replica": 4 });
    let (status, body, _) = call(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(stale),
        Some(ADMIN),
        Some(&etag),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    // Invalid settings: 400 with the reason, file untouched.
    let before = file(&gw);
    let bad = json!({ "min_replica": 5, "max_replica": 2 });
    let (status, body, _) = api(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(bad),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(file(&gw), before);
    let (status, _, _) = api(
        &gw,
        "PATCH",
        "/v1/models/m/deployments/a/autoscaling_settings",
        Some(json!({ "min_replicas": 1 })),
    )
    .await;
    assert_eq!(status, 400, "unknown fields are refused");
}

#[tokio::test]
async fn deactivate_activate_and_delete_follow_the_lifecycle_rules() {
    let (gw, _a, _b) = setup();
    assert_eq!(predict(&gw, "deployment/b").await.0, 200);
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments/b/deactivate", None).await;
    assert_eq!(
        (status, body["deployment"]["status"].as_str()),
        (200, Some("INACTIVE")),
        "{body}"
    );
    assert_eq!(predict(&gw, "deployment/b").await.0, 404);
    assert_eq!(predict(&gw, "environments/staging").await.0, 404);
    let (status, _, _) = api(&gw, "POST", "/v1/models/m/deployments/b/activate", None).await;
    assert_eq!(status, 200);
    assert_eq!(predict(&gw, "deployment/b").await, (200, "b".to_owned()));

    // An environment points at b: delete is refused until it points elsewhere.
    let (status, body, _) = api(&gw, "DELETE", "/v1/models/m/deployments/b", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body, _) = api(&gw, "DELETE", "/v1/models/m/environments/staging", None).await;
    assert_eq!(
        (status, body["deployment_scaled_to_zero"].as_str()),
        (200, Some("b")),
        "{body}"
    );
    assert_eq!(predict(&gw, "environments/staging").await.0, 404);
    let (status, _, _) = api(&gw, "DELETE", "/v1/models/m/environments/production", None).await;
    assert_eq!(status, 409, "production cannot be deleted");
    let (status, _, _) = api(&gw, "DELETE", "/v1/models/m/deployments/b", None).await;
    assert_eq!(status, 200);
    assert_eq!(predict(&gw, "deployment/b").await.0, 404);
    let (status, _, _) = api(&gw, "GET", "/v1/models/m/deployments/b", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn promotion_switches_only_once_ready_and_drops_no_request() {
    let (gw, _a, _b) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (stop, failed, url) = (
            stop.clone(),
            failed.clone(),
            gw.url("/models/m/production/predict"),
        );
        tokio::spawn(async move {
            let mut served = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let resp = post(&url, None, Some(KEY), r#"{"text":"x"}"#).await;
                if resp.status() != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                served.push(header(&resp, "x-deployment-id").to_owned());
            }
            served
        })
    };
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments/b/promote", None).await;
    assert_eq!(
        (status, body["promotion"]["status"].as_str()),
        (202, Some("IN_PROGRESS")),
        "{body}"
    );
    eventually("promotion SUCCEEDED", || async {
        let (_, env, _) = api(&gw, "GET", "/v1/models/m/environments/production", None).await;
        env["promotion"]["status"] == "SUCCEEDED"
    })
    .await;
    assert_eq!(predict(&gw, "production").await, (200, "b".to_owned()));
    stop.store(true, Ordering::Relaxed);
    let served = stream.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.first().is_some_and(|d| d == "a"), "started on a");
    assert_eq!(served.last().map(String::as_str), Some("b"));
    // SCALE_TO_ZERO (the default) applied to the previous deployment.
    let config = config::load_str(&file(&gw), "edited").unwrap();
    assert_eq!(
        config.models[0]
            .deployment("a")
            .unwrap()
            .autoscaling
            .min_replica,
        0
    );
    assert_eq!(
        config.models[0]
            .environment("production")
            .unwrap()
            .deployment
            .as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn one_promotion_per_environment_and_cancel_keeps_the_old_deployment() {
    let (gw, _a, _b) = setup();
    // A deployment whose only replica never answers: its promotion waits.
    let dead = format!("127.0.0.1:{}", support::free_port());
    let new = json!({ "id": "c", "replicas": { "source": "static", "addresses": [dead] } });
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments", Some(new)).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (201, Some("deployment-3")),
        "{body}"
    );
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/promote",
        Some(json!({ "deployment_id": "c" })),
    )
    .await;
    assert_eq!(status, 202);
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments/b/promote", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/cancel_promotion",
        None,
    )
    .await;
    assert_eq!(
        (status, body["promotion"]["status"].as_str()),
        (200, Some("CANCELLED")),
        "{body}"
    );
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/cancel_promotion",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(predict(&gw, "production").await, (200, "a".to_owned()));
    // Now b can be promoted.
    let (status, _, _) = api(&gw, "POST", "/v1/models/m/deployments/b/promote", None).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn concurrent_api_edits_and_hand_edits_lose_nothing() {
    let (gw, _a, _b) = setup();
    let path = gw.config.path().to_owned();
    // Hand edits that save by rename-over and check that the file did not
    // change under them (as the API does): append a comment line, 40 times.
    let hand = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut done = 0;
            while done < 40 {
                let before = std::fs::read_to_string(&path).unwrap();
                let after = format!("{before}# hand edit {done}\n");
                if control::store::replace_if_unchanged(&path, before.as_bytes(), after.as_bytes())
                    .unwrap()
                {
                    done += 1;
                }
                #[allow(clippy::disallowed_methods)] // its own blocking thread
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let edits: Vec<_> = (0..200)
        .map(|i| {
            let url = format!("http://{}/v1/models/m/environments", gw.admin);
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .header("authorization", format!("Api-Key {ADMIN}"))
                    .json(&json!({ "name": format!("env-{i}") }))
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            })
        })
        .collect();
    for edit in edits {
        let (status, body) = edit.await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    hand.await.unwrap();
    let text = file(&gw);
    let config = config::load_str(&text, "final").expect("the file is valid");
    for i in 0..200 {
        assert!(
            config.models[0].environment(&format!("env-{i}")).is_some(),
            "env-{i} lost"
        );
    }
    for i in 0..40 {
        assert!(
            text.contains(&format!("# hand edit {i}\n")),
            "hand edit {i} lost"
        );
    }
    assert!(text.contains("# The operator's notes: keep me."));
}

#[tokio::test]
async fn the_cli_operations_call_the_api() {
    let (gw, _a, _b) = setup();
    let admin = format!("http://{}", gw.admin);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(args)
            .args(["--admin", &admin, "--key", ADMIN])
            .output()
            .unwrap()
    };
    let out = run(&["deactivate", "--model", "m", "--deployment", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(predict(&gw, "deployment/b").await.0, 404);
    let out = run(&["status", "--model", "m"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with('b') && l.contains("INACTIVE")),
        "{table}"
    );
    let out = run(&["activate", "--model", "m", "--deployment", "b"]);
    assert!(out.status.success());
    assert_eq!(predict(&gw, "deployment/b").await.0, 200);
    let out = run(&["promote", "--model", "m", "--deployment", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[tokio::test]
async fn usage_is_recorded_and_outlives_the_deployment_and_reloads_are_counted() {
    let (gw, _a, _b) = setup_with("usage_interval_secs = 1");
    for _ in 0..5 {
        assert_eq!(predict(&gw, "deployment/b").await.0, 200);
    }
    let usage_of = |body: &Value, dep: &str| {
        body["usage"]
            .as_array()
            .and_then(|u| u.iter().find(|r| r["deployment"] == dep).cloned())
            .unwrap_or(Value::Null)
    };
    eventually("usage recorded for b", || async {
        let (_, body, _) = api(&gw, "GET", "/v1/usage?model=m", None).await;
        let b = usage_of(&body, "b");
        b["requests"] == 5 && b["replica_seconds"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    // Delete b (after deleting the environment that serves it): its usage stays.
    assert_eq!(
        api(&gw, "DELETE", "/v1/models/m/environments/staging", None)
            .await
            .0,
        200
    );
    assert_eq!(
        api(&gw, "DELETE", "/v1/models/m/deployments/b", None)
            .await
            .0,
        200
    );
    let (_, body, _) = api(&gw, "GET", "/v1/usage", None).await;
    assert_eq!(usage_of(&body, "b")["requests"], 5, "{body}");
    assert_eq!(usage_of(&body, "b")["resources"], "1 cpu, 2048 MiB");

    let (status, counts, _) = api(&gw, "GET", "/v1/config", None).await;
    assert_eq!(status, 200);
    assert_eq!(counts["applied_revisions"], 3, "{counts}"); // startup + 2 edits
    assert_eq!(counts["rejected_reloads"], 0);
    let good = file(&gw);
    std::fs::write(
        gw.config.path(),
        format!("{good}\n[[models]]\nid = \"broken\"\nnope = 1\n"),
    )
    .unwrap();
    eventually("the broken edit counted", || async {
        let (_, body, _) = api(&gw, "GET", "/v1/config", None).await;
        body["rejected_reloads"] == 1 && body["file_errors"].is_string()
    })
    .await;
    assert_eq!(
        predict(&gw, "production").await.0,
        200,
        "the old config keeps serving"
    );
}

#[tokio::test]
async fn a_development_deployment_is_promoted_as_a_new_persistent_deployment() {
    let (gw, _a, b) = setup();
    let dev = json!({ "kind": "development", "replicas": { "source": "static", "addresses": [b.addr.to_string()] } });
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments", Some(dev)).await;
    assert_eq!(
        (
            status,
            body["name"].as_str(),
            body["is_development"].as_bool()
        ),
        (201, Some("development"), Some(true)),
        "{body}"
    );
    let second =
        json!({ "kind": "development", "replicas": { "source": "static", "addresses": [] } });
    let (status, _, _) = api(&gw, "POST", "/v1/models/m/deployments", Some(second)).await;
    assert_eq!(status, 409, "one development deployment per model");

    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/deployments/development/promote",
        None,
    )
    .await;
    assert_eq!(status, 202);
    eventually("promotion SUCCEEDED", || async {
        api(&gw, "GET", "/v1/models/m/environments/production", None)
            .await
            .1["promotion"]["status"]
            == "SUCCEEDED"
    })
    .await;
    let (_, env, _) = api(&gw, "GET", "/v1/models/m/environments/production", None).await;
    let promoted = env["deployment"]["id"].as_str().unwrap().to_owned();
    assert!(
        !["a", "b", "development"].contains(&promoted.as_str()),
        "a new id: {promoted}"
    );
    assert_eq!(env["deployment"]["name"], "deployment-3");
    assert_eq!(env["deployment"]["is_development"], false);
    assert_eq!(predict(&gw, "production").await, (200, promoted));
    // The development deployment is still there, still development.
    assert_eq!(predict(&gw, "development").await.0, 200);
}

#[tokio::test]
async fn cleanup_deactivate_and_environment_settings_follow_the_promotion() {
    let (gw, _a, _b) = setup();
    let patch = json!({
        "promotion": { "cleanup_strategy": "DEACTIVATE" },
        "autoscaling": { "max_replica": 4 },
    });
    let (status, body, _) = api(
        &gw,
        "PATCH",
        "/v1/models/m/environments/production",
        Some(patch),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
    // Until b is promoted, production's settings apply to a, not b.
    let (_, d, _) = api(&gw, "GET", "/v1/models/m/deployments/b", None).await;
    assert_eq!(d["effective_autoscaling_settings"]["max_replica"], 1, "{d}");
    let (_, d, _) = api(&gw, "GET", "/v1/models/m/deployments/a", None).await;
    assert_eq!(d["effective_autoscaling_settings"]["max_replica"], 4, "{d}");

    // A steady stream through the promotion, a deactivation of the previous
    // deployment, activations and reloads: nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (stop, failed, url) = (
            stop.clone(),
            failed.clone(),
            gw.url("/models/m/production/predict"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if post(&url, None, Some(KEY), r#"{"text":"x"}"#)
                    .await
                    .status()
                    != 200
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/promote",
        Some(json!({ "deployment_id": "b" })),
    )
    .await;
    assert_eq!(status, 202);
    eventually("promotion SUCCEEDED", || async {
        api(&gw, "GET", "/v1/models/m/environments/production", None)
            .await
            .1["promotion"]["status"]
            == "SUCCEEDED"
    })
    .await;
    let (_, a, _) = api(&gw, "GET", "/v1/models/m/deployments/a", None).await;
    assert_eq!(
        (a["active"].as_bool(), a["status"].as_str()),
        (Some(false), Some("INACTIVE")),
        "DEACTIVATE cleanup: {a}"
    );
    let (_, b, _) = api(&gw, "GET", "/v1/models/m/deployments/b", None).await;
    assert_eq!(b["effective_autoscaling_settings"]["max_replica"], 4, "{b}");
    assert_eq!(
        api(&gw, "POST", "/v1/models/m/deployments/a/activate", None)
            .await
            .0,
        200
    );
    let settings = json!({ "scale_down_delay": 60 });
    assert_eq!(
        api(
            &gw,
            "PATCH",
            "/v1/models/m/deployments/b/autoscaling_settings",
            Some(settings)
        )
        .await
        .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    stream.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn deleting_an_environment_cancels_its_promotion() {
    let (gw, _a, _b) = setup();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let new = json!({ "id": "c", "replicas": { "source": "static", "addresses": [dead] } });
    assert_eq!(
        api(&gw, "POST", "/v1/models/m/deployments", Some(new))
            .await
            .0,
        201
    );
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/staging/promote",
        Some(json!({ "deployment_id": "c" })),
    )
    .await;
    assert_eq!(status, 202);
    let (status, body, _) = api(&gw, "DELETE", "/v1/models/m/environments/staging", None).await;
    assert_eq!(
        (status, body["deployment_scaled_to_zero"].as_str()),
        (200, Some("b")),
        "{body}"
    );
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/staging/cancel_promotion",
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing left to cancel");
    assert_eq!(predict(&gw, "environments/staging").await.0, 404);
    let config = config::load_str(&file(&gw), "edited").unwrap();
    assert_eq!(
        config.models[0]
            .deployment("b")
            .unwrap()
            .autoscaling
            .min_replica,
        0
    );
}
