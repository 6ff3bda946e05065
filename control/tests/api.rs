//! The management API without sockets: `Api::handle` takes an `http`
//! request and returns the response, as the gateway's admin listener calls
//! it, over a config file in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use control::Reloader;
use control::api::Api;
use control::plane::ShutdownSignal;
use control::promotion::Promotions;
use control::store::ConfigStore;
use control::usage::UsageLedger;
use http::{Request, Response};
use routing::{Routing, Snapshot};
use serde_json::{Value, json};
use testkit::fixture::{Deployment, Model, key_entry};

const ADMIN: &str = "igw_admin_key";
const PREDICT: &str = "igw_predict_key";

/// An API over a config with model `m`: deployment `a` (static, no
/// replicas) in production.
struct Setup {
    api: Api,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = format!(
        "{}{}{}",
        key_entry(ADMIN, "ops", "\"admin\""),
        key_entry(PREDICT, "client", "\"all\""),
        Model::new("m")
            .deployment(Deployment::fixed("a", &[]))
            .environment("production", "a")
            .toml()
    );
    std::fs::write(&path, text).unwrap();
    let config = config::load_file(&path).unwrap();
    let routing = Arc::new(Routing::new(Snapshot::new(&config)));
    let reloader = Arc::new(Reloader::new(&path, config, Arc::clone(&routing)));
    let store = Arc::new(ConfigStore::new(&path, reloader));
    let promotions = Promotions::new(
        Arc::clone(&routing),
        Arc::clone(&store),
        tokio::runtime::Handle::current(),
        ShutdownSignal::never(),
    );
    let usage = Arc::new(UsageLedger::beside(&path));
    Setup {
        api: Api::new(routing, store, usage, promotions),
        path,
        _dir: dir,
    }
}

/// A request with `key` (as `Api-Key`), `if_match` and a JSON `body`.
fn request(
    method: &str,
    path: &str,
    key: Option<&str>,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Request<Bytes> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Api-Key {key}"));
    }
    if let Some(tag) = if_match {
        builder = builder.header("if-match", tag);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    builder.body(body).unwrap()
}

/// Status, JSON body and ETag of a response.
fn parts(response: &Response<Vec<u8>>) -> (u16, Value, String) {
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), body, etag)
}

impl Setup {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        parts(
            &self
                .api
                .handle(request(method, path, key, if_match, body))
                .await,
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value, String) {
        self.call(method, path, Some(ADMIN), None, body).await
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }
}

#[tokio::test]
async fn without_an_admin_key_the_api_answers_401_or_403_and_changes_nothing() {
    let s = setup();
    let before = s.file();
    for (key, status) in [
        (None, 401),
        (Some("igw_unknown"), 401),
        (Some(PREDICT), 403),
    ] {
        let (got, body, _) = s.call("GET", "/v1/models", key, None, None).await;
        assert_eq!(got, status, "key {key:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
        let patch = json!({ "max_replica": 3 });
        let path = "/v1/models/m/deployments/a/autoscaling_settings";
        let (got, _, _) = s.call("PATCH", path, key, None, Some(patch)).await;
        assert_eq!(got, status, "PATCH with key {key:?}");
    }
    assert_eq!(s.file(), before);
}

#[tokio::test]
async fn the_listing_names_the_models_and_a_model_its_deployments_with_a_revision() {
    let s = setup();
    let (status, body, _) = s.admin("GET", "/v1/models", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("\"m\""), "{body}");
    let (status, body, etag) = s.admin("GET", "/v1/models/m", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(etag.starts_with('"'), "ETag {etag:?}");
    assert_eq!(body["deployments"][0]["id"], "a", "{body}");
    assert_eq!(
        body["deployments"][0]["environments"],
        json!(["production"])
    );
    let (status, _, _) = s.admin("GET", "/v1/models/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_edit_on_a_stale_revision_gets_412_and_a_current_one_applies() {
    let s = setup();
    let path = "/v1/models/m/deployments/a/autoscaling_settings";
    let (_, _, etag) = s.admin("GET", "/v1/models/m", None).await;
    let patch = json!({ "min_replica": 0, "max_replica": 3 });
    let (status, body, new_etag) = s
        .call("PATCH", path, Some(ADMIN), Some(&etag), Some(patch))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{body}"
    );
    assert_ne!(new_etag, etag, "the revision changed with the file");
    let edited = config::load_str(&s.file(), "edited").unwrap();
    assert_eq!(
        edited.models[0]
            .deployment("a")
            .unwrap()
            .autoscaling
            .max_replica,
        3
    );

    // The old revision is stale now: refused, the file as it was.
    let before = s.file();
    let (status, body, _) = s
        .call(
            "PATCH",
            path,
            Some(ADMIN),
            Some(&etag),
            Some(json!({ "max_replica": 4 })),
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(s.file(), before);
}

#[tokio::test]
async fn an_invalid_edit_gets_400_with_the_reason_and_leaves_the_file() {
    let s = setup();
    let before = s.file();
    let path = "/v1/models/m/deployments/a/autoscaling_settings";
    let bad = json!({ "min_replica": 5, "max_replica": 2 });
    let (status, body, _) = s.admin("PATCH", path, Some(bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let (status, body, _) = s
        .admin("PATCH", path, Some(json!({ "min_replicas": 1 })))
        .await;
    assert_eq!(status, 400, "an unknown field: {body}");
    assert_eq!(s.file(), before);
}
