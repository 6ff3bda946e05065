//! Promotion through the management API: it switches only once the new
//! deployment is ready, drops no request, and follows the lifecycle rules.

use std::time::Duration;

use serde_json::json;
use testkit::admin::{Stream, api, file, predict, setup, wait_promoted};

#[tokio::test]
async fn promotion_switches_only_once_ready_and_drops_no_request() {
    let (gw, _a, _b) = setup();
    let stream = Stream::start(&gw);
    let (status, body, _) = api(&gw, "POST", "/v1/models/m/deployments/b/promote", None).await;
    assert_eq!(
        (status, body["promotion"]["status"].as_str()),
        (202, Some("IN_PROGRESS")),
        "{body}"
    );
    wait_promoted(&gw, "production").await;
    assert_eq!(predict(&gw, "production").await, (200, "b".to_owned()));
    let (failed, served) = stream.finish().await;
    assert_eq!(failed, 0);
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
    let dead = testkit::dead_addr().to_string();
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
    wait_promoted(&gw, "production").await;
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
    let stream = Stream::start(&gw);
    let (status, _, _) = api(
        &gw,
        "POST",
        "/v1/models/m/environments/production/promote",
        Some(json!({ "deployment_id": "b" })),
    )
    .await;
    assert_eq!(status, 202);
    wait_promoted(&gw, "production").await;
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
    // Time passing is the point: the stream keeps running across the
    // edits' reloads before it is judged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stream.finish().await.0, 0);
}

#[tokio::test]
async fn deleting_an_environment_cancels_its_promotion() {
    let (gw, _a, _b) = setup();
    let dead = testkit::dead_addr().to_string();
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
