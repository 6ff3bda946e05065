//! One test kit for the workspace's tests (a dev-dependency only, never
//! published): real processes on port 0 read from their ready lines, config
//! builders, polling instead of fixed sleeps, raw-socket helpers.
//!
//! - [`process`]: a child killed by its own pid and reaped on drop, its
//!   stderr in a file for failure messages; [`process::binary`] finds the
//!   workspace's binaries next to the test binary.
//! - [`gateway`]: `gateway serve` on port 0 listeners, addresses from its
//!   ready line; [`engine`]: replicas the same way.
//! - [`fixture`]: the config TOML the tests repeat (keys, static models).
//! - [`wait`]: `eventually(what, || condition)`, blocking or async.
//! - [`raw`], [`wire`]: exact bytes over one TCP connection; [`replica`]:
//!   a recording upstream on tokio; [`admin`]: the management API;
//!   [`tls`]: certificates made with `openssl`, `curl` as HTTPS client;
//!   [`onnx`]: the real model's files and reference outputs; [`etcd`]: a
//!   real etcd and fleet nodes on it.
//!
//! Clocks: the kit blocks threads and reads the wall clock on purpose
//! (it runs beside, not inside, the code under test).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod admin;
pub mod engine;
pub mod etcd;
pub mod fixture;
pub mod gateway;
pub mod onnx;
pub mod process;
pub mod raw;
pub mod replica;
pub mod tls;
pub mod wait;
pub mod wire;

use std::net::{SocketAddr, TcpListener};

use routing::telemetry::IN_FLIGHT;

pub use engine::engine;
pub use fixture::key_entry;
pub use gateway::{Gateway, gateway, gateway_through, gateway_with, restart};
pub use process::{Proc, alive, binary};
pub use wait::{eventually, eventually_async};

/// The key the tests' gateway configs accept with scope "all".
pub const KEY: &str = "igw_test_key";

/// An address nothing listens on: bound, then closed at once, so a
/// connection to it is refused (unless another process takes the port in
/// the meantime, which loopback's ephemeral range makes unlikely).
pub fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An HTTP client that keeps connections alive (and ignores proxy
/// settings).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs `body`, with a Host and an `Api-Key` header when given.
pub async fn post(
    url: &str,
    host: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = client().post(url).body(body.to_owned());
    if let Some(host) = host {
        req = req.header("host", host);
    }
    if let Some(key) = key {
        req = req.header("authorization", format!("Api-Key {key}"));
    }
    req.send().await.expect("request")
}

/// `GET url`, its body as JSON (whatever the status).
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// `GET url`, its body as text (whatever the status).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: unreadable body: {e}"))
}

/// A response header as text (empty when missing).
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The gateway's `/metrics` exposition.
pub async fn scrape(gw: &Gateway) -> String {
    let resp = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "GET /metrics");
    resp.text().await.expect("a metrics body")
}

/// Waits until requests hold `n` replica slots of deployment `deployment`
/// (`igw_requests_in_flight`): a request sent on another task has reached
/// its replica, where a test would otherwise sleep and hope.
pub async fn until_in_flight(gw: &Gateway, deployment: &str, n: usize) {
    let what = format!("{n} request(s) in flight at deployment {deployment}");
    eventually_async(&what, || async {
        let text = scrape(gw).await;
        metric_sum(&text, IN_FLIGHT, &[("deployment", deployment)]) >= n as f64
    })
    .await;
}

/// The sum of the samples of `name`, in a Prometheus text exposition,
/// whose labels include every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let body = rest.strip_suffix('}')?;
            let has = |(k, v): &(&str, &str)| {
                body.split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\"").as_str())
            };
            labels.iter().all(has).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
