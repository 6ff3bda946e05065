//! The management API as the tests call it: a gateway with two deployments
//! and an admin key, API calls, and a steady stream of predict calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;

use crate::gateway::{Launch, port_zero, start_text};
pub use crate::process::alive;
pub use crate::wait::eventually_async as eventually;
use crate::{Gateway, KEY, Proc, client, engine, gateway_with, header, key_entry, post};

pub const ADMIN: &str = "igw_admin_key";

/// A model with deployments `a` (production) and `b` (staging), each with
/// one replica, and an operator's comments that edits must keep.
pub fn setup() -> (Gateway, Proc, Proc) {
    setup_with("")
}

/// [`setup`] with extra `[server]` lines.
pub fn setup_with(server: &str) -> (Gateway, Proc, Proc) {
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
    (gateway_with(server, &body), a, b)
}

/// Calls the API with the admin key; returns status, body and ETag.
pub async fn api(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    call(gw, method, path, body, Some(ADMIN), None).await
}

pub async fn call(
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
pub async fn predict(gw: &Gateway, target: &str) -> (u16, String) {
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

pub fn file(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.config.path()).unwrap()
}

/// Predict calls to production, one after another, until [`Stream::finish`].
#[derive(Debug)]
pub struct Stream {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Stream {
    pub fn start(gw: &Gateway) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let (stop2, failed2, url) = (
            stop.clone(),
            failed.clone(),
            gw.url("/models/m/production/predict"),
        );
        let task = tokio::spawn(async move {
            let mut served = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let resp = post(&url, None, Some(KEY), r#"{"text":"x"}"#).await;
                if resp.status() != 200 {
                    failed2.fetch_add(1, Ordering::Relaxed);
                }
                served.push(header(&resp, "x-deployment-id").to_owned());
            }
            served
        });
        Self { stop, failed, task }
    }

    /// Stops the stream: the failed calls, and who answered each call.
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let served = self.task.await.unwrap();
        (self.failed.load(Ordering::Relaxed), served)
    }
}

/// Waits until the promotion into `env` has succeeded.
pub async fn wait_promoted(gw: &Gateway, env: &str) {
    let path = format!("/v1/models/m/environments/{env}");
    eventually("promotion SUCCEEDED", || async {
        api(gw, "GET", &path, None).await.1["promotion"]["status"] == "SUCCEEDED"
    })
    .await;
}

/// A gateway with the admin key and one model (no replica needed), logging
/// at `level` (read it with [`Gateway::log`]): for the tests of what it
/// logs.
pub fn gateway_logging(level: &str) -> Gateway {
    let text = format!(
        "[listeners]\npredict = \"{zero}\"\nadmin = \"{zero}\"\n{}{}\n[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"a\"\nreplicas = {{ source = \"static\" }}\n",
        key_entry(KEY, "test", "\"all\""),
        key_entry(ADMIN, "ops", "\"admin\""),
        zero = port_zero(),
    );
    start_text(
        &text,
        &Launch {
            log_level: level,
            ..Launch::default()
        },
    )
}

/// What each replica of deployment `d` of model `m` says at `/info`
/// (`replica`, `pid`, ...), found through the deployment's status.
pub async fn replica_infos(gw: &Gateway, m: &str, d: &str) -> Vec<Value> {
    let (status, body, _) = api(gw, "GET", &format!("/v1/models/{m}/deployments/{d}"), None).await;
    assert_eq!(status, 200, "{body}");
    let mut infos = Vec::new();
    for instance in body["replicas"]["instances"].as_array().unwrap() {
        let url = format!("http://{}/info", instance["address"].as_str().unwrap());
        infos.push(crate::get_json(&url).await);
    }
    infos
}
