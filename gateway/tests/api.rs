//! The management API on the admin listener: reads, edits of the real
//! config file (by the API and by hand), lifecycle rules, usage and the CLI.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::admin::{ADMIN, api, call, eventually, file, predict, setup, setup_with};
use testkit::{KEY, client};

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
        d["status"] == "ACTIVE"
            && (&d["replicas"]["desired"], &d["replicas"]["ready"]) == (&json!(1), &json!(1))
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
