//! A refused management call changes nothing: not the config file, not the
//! deployments, not a promotion or rollout in progress. Each refusal is
//! checked against the state just before it, on a real gateway. And the
//! admin listener refuses early and quietly: no body is read before the key
//! is checked, and a malformed request gets a 400 with nothing of it (its
//! key above all) in the log.

use serde_json::{Value, json};
use testkit::admin::{ADMIN, api, call, eventually, file, gateway_logging, setup};
use testkit::raw::Client;
use testkit::{KEY, dead_addr};

/// Adds deployment `id`, whose only replica never answers: a promotion to
/// it waits for replicas until it is cancelled.
async fn add_unready(gw: &testkit::Gateway, id: &str) {
    let dead = dead_addr().to_string();
    let new = json!({ "id": id, "replicas": { "source": "static", "addresses": [dead] } });
    let (status, body, _) = api(gw, "POST", "/v1/models/m/deployments", Some(new)).await;
    assert_eq!(status, 201, "{body}");
}

/// Adds the development deployment, on `addr`.
async fn add_development(gw: &testkit::Gateway, addr: &str) {
    let dev =
        json!({ "kind": "development", "replicas": { "source": "static", "addresses": [addr] } });
    let (status, body, _) = api(gw, "POST", "/v1/models/m/deployments", Some(dev)).await;
    assert_eq!(status, 201, "{body}");
}

/// Starts promoting `deployment` into `env` (202).
async fn promote(gw: &testkit::Gateway, env: &str, deployment: &str) {
    let path = format!("/v1/models/m/environments/{env}/promote");
    let body = json!({ "deployment_id": deployment });
    let (status, body, _) = api(gw, "POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{body}");
}

/// The ids of the model's deployments, in order.
async fn deployment_ids(gw: &testkit::Gateway) -> Vec<String> {
    let (status, body, _) = api(gw, "GET", "/v1/models/m/deployments", None).await;
    assert_eq!(status, 200, "{body}");
    body["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The promotion into `env` as the API shows it (running or last).
async fn promotion(gw: &testkit::Gateway, env: &str) -> Value {
    let path = format!("/v1/models/m/environments/{env}");
    let (status, body, _) = api(gw, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["promotion"].clone()
}

/// What a refusal must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    file: String,
    deployments: Vec<String>,
    production: Value,
    staging: Value,
}

async fn state(gw: &testkit::Gateway) -> State {
    State {
        file: file(gw),
        deployments: deployment_ids(gw).await,
        production: promotion(gw, "production").await,
        staging: promotion(gw, "staging").await,
    }
}

/// Sends a call that must be refused with `status`, and checks that the
/// file, the deployments and both promotions are as they were before it;
/// returns the error message.
async fn assert_refused(
    gw: &testkit::Gateway,
    (method, path, body): (&str, &str, Option<Value>),
    if_match: Option<&str>,
    status: u16,
) -> String {
    let before = state(gw).await;
    let (got, answer, _) = call(gw, method, path, body, Some(ADMIN), if_match).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    assert_eq!(state(gw).await, before, "{method} {path} changed something");
    answer["error"].as_str().unwrap_or_default().to_owned()
}

/// An ETag the file no longer has: taken, then the file edited.
async fn stale_etag(gw: &testkit::Gateway) -> String {
    let (_, _, etag) = api(gw, "GET", "/v1/models/m", None).await;
    let patch = json!({ "autoscaling": { "max_replica": 3 } });
    let (status, body, _) = api(
        gw,
        "PATCH",
        "/v1/models/m/environments/staging",
        Some(patch),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    etag
}

#[tokio::test]
async fn a_refused_development_promotion_writes_no_copy() {
    let (gw, _a, b) = setup();
    add_unready(&gw, "c").await;
    add_development(&gw, &b.addr.to_string()).await;
    promote(&gw, "production", "c").await;
    assert_eq!(
        promotion(&gw, "production").await["state"],
        "WAITING_FOR_REPLICAS"
    );
    let dev_into_production = ("POST", "/v1/models/m/deployments/development/promote", None);

    // A promotion into production is in progress: 409, and no
    // `deployment-N` copy of the development deployment, however often
    // the call is retried.
    for _ in 0..3 {
        assert_refused(&gw, dev_into_production.clone(), None, 409).await;
    }
    // Into an environment that does not exist: 404, no copy.
    let nowhere = Some(json!({ "environment": "nope" }));
    let dev_promote = "/v1/models/m/deployments/development/promote";
    assert_refused(&gw, ("POST", dev_promote, nowhere), None, 404).await;
    // On a stale revision: 412, no copy (nothing runs in staging).
    let stale = stale_etag(&gw).await;
    let into_staging = Some(json!({ "environment": "staging" }));
    assert_refused(&gw, ("POST", dev_promote, into_staging), Some(&stale), 412).await;
    assert_eq!(promotion(&gw, "staging").await, Value::Null);

    // Once production's promotion is cancelled, the same call is accepted
    // and makes exactly one copy.
    let cancel = "/v1/models/m/environments/production/cancel_promotion";
    assert_eq!(api(&gw, "POST", cancel, None).await.0, 200);
    let before = deployment_ids(&gw).await;
    let (status, body, _) = api(&gw, "POST", dev_promote, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(deployment_ids(&gw).await.len(), before.len() + 1);
}

#[tokio::test]
async fn a_refused_promotion_into_a_busy_environment_leaves_the_running_one() {
    let (gw, _a, _b) = setup();
    add_unready(&gw, "c").await;
    promote(&gw, "production", "c").await;
    let body = Some(json!({ "deployment_id": "b" }));
    let path = "/v1/models/m/environments/production/promote";
    assert_refused(&gw, ("POST", path, body), None, 409).await;
    let running = promotion(&gw, "production").await;
    assert_eq!(
        (running["deployment_id"].as_str(), running["state"].as_str()),
        (Some("c"), Some("WAITING_FOR_REPLICAS")),
        "{running}"
    );
}

#[tokio::test]
async fn deleting_production_is_refused_and_its_rollout_keeps_ramping() {
    let (gw, _a, _b) = setup();
    let ramp = json!({ "promotion": { "ramp_up": true, "ramp_up_duration": 600 } });
    let path = "/v1/models/m/environments/production";
    assert_eq!(api(&gw, "PATCH", path, Some(ramp)).await.0, 200);
    promote(&gw, "production", "b").await;
    eventually("production RAMPING", || async {
        promotion(&gw, "production").await["state"] == "RAMPING"
    })
    .await;

    assert_refused(&gw, ("DELETE", path, None), None, 409).await;
    let stale = stale_etag(&gw).await;
    assert_refused(&gw, ("DELETE", path, None), Some(&stale), 412).await;
    // The rollout is still in the file and still moving traffic.
    let config = config::load_str(&file(&gw), "after").unwrap();
    let rollout = config.models[0]
        .environment("production")
        .unwrap()
        .rollout
        .as_ref()
        .map(|r| r.deployment.clone());
    assert_eq!(rollout.as_deref(), Some("b"));
    assert_eq!(promotion(&gw, "production").await["state"], "RAMPING");
}

#[tokio::test]
async fn a_delete_on_a_stale_revision_leaves_the_environment_and_its_promotion() {
    let (gw, _a, _b) = setup();
    add_unready(&gw, "c").await;
    promote(&gw, "staging", "c").await;
    let stale = stale_etag(&gw).await;
    let path = "/v1/models/m/environments/staging";
    assert_refused(&gw, ("DELETE", path, None), Some(&stale), 412).await;
    assert_eq!(
        promotion(&gw, "staging").await["state"],
        "WAITING_FOR_REPLICAS"
    );

    // The same delete on the current revision goes through, and only then
    // is the promotion cancelled.
    let (_, _, etag) = api(&gw, "GET", "/v1/models/m", None).await;
    let (status, body, _) = call(&gw, "DELETE", path, None, Some(ADMIN), Some(&etag)).await;
    assert_eq!(status, 200, "{body}");
    let cancel = "/v1/models/m/environments/staging/cancel_promotion";
    assert_eq!(
        api(&gw, "POST", cancel, None).await.0,
        404,
        "nothing left to cancel"
    );
}

/// Every management call that edits, refused for a reason of its own and
/// on a stale revision: the file, the deployments and the promotions stay
/// as they were.
#[tokio::test]
async fn every_refused_edit_leaves_everything_as_it_was() {
    let (gw, _a, _b) = setup();
    add_unready(&gw, "c").await;
    promote(&gw, "staging", "c").await;
    let stale = stale_etag(&gw).await;
    let d = "/v1/models/m/deployments";
    let e = "/v1/models/m/environments";
    let calls: Vec<(&str, String, Option<Value>, u16)> = vec![
        // Taken id.
        (
            "POST",
            d.to_owned(),
            Some(json!({ "id": "a", "replicas": { "source": "static" } })),
            409,
        ),
        // Invalid result (min over max).
        (
            "PATCH",
            format!("{d}/a/autoscaling_settings"),
            Some(json!({ "min_replica": 5, "max_replica": 2 })),
            400,
        ),
        (
            "PATCH",
            format!("{d}/a"),
            Some(json!({ "predict_concurrency": 0 })),
            400,
        ),
        // An environment serves it.
        ("DELETE", format!("{d}/a"), None, 409),
        ("POST", format!("{d}/nope/deactivate"), None, 404),
        ("POST", format!("{d}/nope/activate"), None, 404),
        (
            "POST",
            format!("{d}/a/promote"),
            Some(json!({ "environment": "nope" })),
            404,
        ),
        (
            "POST",
            e.to_owned(),
            Some(json!({ "name": "staging" })),
            409,
        ),
        (
            "PATCH",
            format!("{e}/nope"),
            Some(json!({ "autoscaling": { "max_replica": 2 } })),
            404,
        ),
        ("DELETE", format!("{e}/production"), None, 409),
        ("DELETE", format!("{e}/nope"), None, 404),
        // A promotion runs in staging.
        (
            "POST",
            format!("{e}/staging/promote"),
            Some(json!({ "deployment_id": "a" })),
            409,
        ),
        (
            "POST",
            format!("{e}/production/cancel_promotion"),
            None,
            404,
        ),
    ];
    for (method, path, body, status) in &calls {
        assert_refused(&gw, (*method, path.as_str(), body.clone()), None, *status).await;
    }
    // The same calls, each otherwise acceptable, on a stale revision.
    let on_stale: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            d.to_owned(),
            Some(json!({ "id": "z", "replicas": { "source": "static" } })),
        ),
        (
            "PATCH",
            format!("{d}/a/autoscaling_settings"),
            Some(json!({ "max_replica": 2 })),
        ),
        (
            "PATCH",
            format!("{d}/a"),
            Some(json!({ "name": "renamed" })),
        ),
        ("DELETE", format!("{d}/c"), None),
        ("POST", format!("{d}/b/deactivate"), None),
        ("POST", e.to_owned(), Some(json!({ "name": "qa" }))),
        (
            "PATCH",
            format!("{e}/production"),
            Some(json!({ "autoscaling": { "max_replica": 2 } })),
        ),
        (
            "POST",
            format!("{e}/production/promote"),
            Some(json!({ "deployment_id": "b" })),
        ),
        ("POST", format!("{d}/b/promote"), None),
    ];
    for (method, path, body) in &on_stale {
        let call = (*method, path.as_str(), body.clone());
        assert_refused(&gw, call, Some(&stale), 412).await;
    }
}

/// Appends `text` to the config file, as an operator's hand edit.
fn hand_edit(gw: &testkit::Gateway, text: &str) {
    let edited = format!("{}\n{text}", file(gw));
    std::fs::write(gw.config.path(), edited).unwrap();
}

/// An onnx engine table with `dir`'s model whose runtime library is
/// `library` in `dir`.
fn onnx(dir: &std::path::Path, library: &str) -> Value {
    json!({ "backend": "onnx", "model": dir.join("m.onnx"), "onnxruntime": dir.join(library) })
}

#[tokio::test]
async fn api_edits_set_no_file_path_unless_the_config_allows_it() {
    let (gw, _a, _b) = setup();
    // The files exist: a path naming none is refused for that alone.
    let dir = tempfile::tempdir().unwrap();
    for name in ["m.onnx", "tokenizer.json", "lib.so", "x.so", "evil.so"] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    let dir = dir.path();
    let d = "/v1/models/m/deployments";
    let new = json!({ "id": "q", "replicas": { "source": "local" }, "engine": onnx(dir, "x.so") });
    let message = assert_refused(&gw, ("POST", d, Some(new.clone())), None, 400).await;
    for field in [
        "`engine.onnxruntime`",
        "`engine.model`",
        "api_may_set_paths = true",
    ] {
        assert!(message.contains(field), "{message}");
    }

    // A deployment with paths, written by hand: edits that keep its paths
    // are accepted (local, at zero replicas: nothing is started).
    hand_edit(
        &gw,
        &format!(
            "[[models.deployments]]\nid = \"p\"\nreplicas = {{ source = \"local\" }}\n[models.deployments.engine]\nbackend = \"onnx\"\nmodel = \"{}\"\nonnxruntime = \"{}\"\n",
            dir.join("m.onnx").display(),
            dir.join("lib.so").display(),
        ),
    );
    let autoscaling = json!({ "max_replica": 2 });
    let path = format!("{d}/p/autoscaling_settings");
    let (status, body, _) = api(&gw, "PATCH", &path, Some(autoscaling)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
    let mut same = onnx(dir, "lib.so");
    same["threads"] = json!(2);
    let (status, body, _) = api(
        &gw,
        "PATCH",
        &format!("{d}/p"),
        Some(json!({ "engine": same })),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
    // Another library is refused, naming the field.
    let other = Some(json!({ "engine": onnx(dir, "evil.so") }));
    let message = assert_refused(&gw, ("PATCH", &format!("{d}/p"), other.clone()), None, 400).await;
    assert!(message.contains("`engine.onnxruntime`"), "{message}");
    assert!(!message.contains("`engine.model`"), "{message}");

    // The operator opts in by hand: the same calls are accepted.
    hand_edit(&gw, "[admin]\napi_may_set_paths = true\n");
    let (status, body, _) = api(&gw, "POST", d, Some(new)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = api(&gw, "PATCH", &format!("{d}/p"), other).await;
    assert_eq!(status, 200, "{body}");
    let config = config::load_str(&file(&gw), "after").unwrap();
    let library = |id: &str| match &config.models[0]
        .deployment(id)
        .unwrap()
        .engine
        .as_ref()
        .unwrap()
        .backend
    {
        config::EngineBackend::Onnx(m) => m.runtime_library.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(library("p"), Some(dir.join("evil.so")));
    assert_eq!(library("q"), Some(dir.join("x.so")));
}

#[tokio::test]
async fn locked_replica_addresses_are_left_to_hand_edits() {
    let (gw, _a, _b) = setup();
    hand_edit(&gw, "[admin]\napi_may_set_replica_addresses = false\n");
    let d = "/v1/models/m/deployments";
    let new =
        json!({ "id": "c", "replicas": { "source": "static", "addresses": ["10.0.0.1:80"] } });
    let message = assert_refused(&gw, ("POST", d, Some(new)), None, 400).await;
    assert!(message.contains("`replicas.addresses`"), "{message}");
    let moved = json!({ "replicas": { "source": "static", "addresses": ["10.0.0.1:80"] } });
    assert_refused(&gw, ("PATCH", &format!("{d}/a"), Some(moved)), None, 400).await;
    // Deployment a keeps its addresses through other edits.
    let path = format!("{d}/a/autoscaling_settings");
    let (status, body, _) = api(&gw, "PATCH", &path, Some(json!({ "max_replica": 2 }))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
}

/// A POST head announcing 1 MiB (the API's limit), with `authorization`.
fn big_post(authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST /v1/models/m/deployments HTTP/1.1\r\nHost: a\r\n{auth}Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_request_body_is_read_only_with_an_admin_key() {
    let gw = gateway_logging("warn");
    let before = file(&gw);
    let predict_key = format!("Api-Key {KEY}");
    for (authorization, status) in [(None, 401), (Some(predict_key.as_str()), 403)] {
        // Only the head is sent: the answer comes without the body, and
        // the connection closes (its body was never read).
        let mut client = Client::connect(gw.admin);
        client.send(&big_post(authorization));
        let response = client.response("the refusal, before any body");
        assert_eq!(response.status, status, "{}", response.describe());
        assert!(
            String::from_utf8_lossy(&response.body).contains("\"error\""),
            "{}",
            response.describe()
        );
        client.assert_closed("the connection whose body was left unread");
    }
    // With the admin key the body is awaited; one over the limit is
    // refused by its length, unread.
    let mut client = Client::connect(gw.admin);
    let over = String::from_utf8(big_post(Some(&format!("Api-Key {ADMIN}"))))
        .unwrap()
        .replace("1048576", "1048577");
    client.send(over.as_bytes());
    let response = client.response("413 by the declared length");
    assert_eq!(response.status, 413, "{}", response.describe());
    client.assert_closed("the connection whose body was left unread");
    assert_eq!(file(&gw), before);
}

#[test]
fn a_malformed_admin_request_gets_400_and_its_key_stays_out_of_the_log() {
    // Debug: the most the gateway would say about a refused request.
    let mut gw = gateway_logging("debug");
    let mut client = Client::connect(gw.admin);
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Api-Key {ADMIN}\r\nBad Header: x\r\n\r\n"
    );
    client.send(request.as_bytes());
    let response = client.response("an answer to a malformed head");
    assert_eq!(response.status, 400, "{}", response.describe());
    assert_eq!(response.header("content-type"), Some("application/json"));
    client.assert_closed("the connection of a malformed request");
    // The listener goes on serving well-formed requests.
    let mut client = Client::connect(gw.admin);
    let good =
        format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Api-Key {ADMIN}\r\n\r\n");
    client.send(good.as_bytes());
    assert_eq!(client.response("a well-formed request").status, 200);

    // Everything the gateway logged, once it has exited.
    gw.proc.signal("INT");
    assert!(
        gw.proc
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some()
    );
    let logged = gw.log();
    assert!(
        logged.contains("admin listener: refused a request head: malformed request head"),
        "the refusal is logged: {logged}"
    );
    for secret in [ADMIN, "Bad Header", "Authorization"] {
        assert!(!logged.contains(secret), "{secret:?} in the log: {logged}");
    }
}
