//! The predict path end to end: real gateway, real engine replicas.

use std::time::Duration;

use testkit::fixture::{Deployment, Model};
use testkit::{KEY, Proc, client, engine, gateway, header, key_entry, post};

fn model_config(id: &str, a: &Proc, b: &Proc, dev: &Proc) -> String {
    format!(
        r#"
[[models]]
id = "{id}"
[[models.deployments]]
id = "a"
replicas = {{ source = "static", addresses = ["{}"] }}
[[models.deployments]]
id = "b"
replicas = {{ source = "static", addresses = ["{}"] }}
sync_routes = ["/predict"]
[[models.deployments]]
id = "dev"
kind = "development"
replicas = {{ source = "static", addresses = ["{}"] }}
[[models.deployments]]
id = "off"
active = false
replicas = {{ source = "static", addresses = ["{}"] }}
[[models.environments]]
name = "production"
deployment = "a"
[[models.environments]]
name = "staging"
deployment = "b"
[[models.environments]]
name = "empty"
"#,
        a.addr, b.addr, dev.addr, a.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_url_form_reaches_the_right_deployment() {
    let (a, b, dev) = (engine("ra", &[]), engine("rb", &[]), engine("rdev", &[]));
    let gw = gateway(&model_config("m1", &a, &b, &dev));
    let host = Some("model-m1.example.com");
    let cases = [
        (gw.url("/production/predict"), host, "a", "ra"),
        (gw.url("/environments/production/predict"), host, "a", "ra"),
        (gw.url("/environments/staging/predict"), host, "b", "rb"),
        (gw.url("/development/predict"), host, "dev", "rdev"),
        (gw.url("/deployment/b/predict"), host, "b", "rb"),
        (gw.url("/models/m1/production/predict"), None, "a", "ra"),
        (
            gw.url("/models/m1/environments/staging/predict"),
            None,
            "b",
            "rb",
        ),
        (
            gw.url("/models/m1/development/predict"),
            None,
            "dev",
            "rdev",
        ),
        (gw.url("/models/m1/deployment/a/predict"), None, "a", "ra"),
    ];
    for (url, host, deployment, replica) in cases {
        let resp = post(&url, host, Some(KEY), r#"{"inputs": ["abc", "de"]}"#).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(header(&resp, "x-deployment-id"), deployment, "{url}");
        assert_eq!(header(&resp, "x-replica-id"), replica, "{url}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body["outputs"][1]["chars"], 2,
            "{url}: the replica saw the body"
        );
    }

    // Passthrough: /sync/{route} reaches the replica's /{route}, key
    // removed, for the routes the deployment declares.
    let resp = client()
        .post(gw.url("/models/m1/environments/staging/sync/predict"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(r#"{"inputs": ["abc"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-deployment-id"), "b");
    assert_eq!(header(&resp, "x-replica-id"), "rb");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["outputs"][0]["chars"], 3);
    // Never the replica's own surface, whatever the spelling.
    for route in [
        "info",
        "metrics",
        "health/ready",
        "INFO",
        "%69nfo",
        "predict/../info",
    ] {
        let resp = client()
            .get(gw.url(&format!("/models/m1/environments/staging/sync/{route}")))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{route}");
        assert!(resp.headers().get("x-replica-id").is_none(), "{route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_the_right_status_and_a_json_error() {
    let (a, b, dev) = (engine("ra", &[]), engine("rb", &[]), engine("rdev", &[]));
    let other_key = "igw_scoped_key";
    let config = format!(
        "{}\n{}\n[[models]]\nid = \"m2\"\n",
        key_entry(other_key, "scoped", "[\"m2\"]"),
        model_config("m1", &a, &b, &dev)
    );
    let gw = gateway(&config);
    let m1 = Some("model-m1.example.com");
    let cases: Vec<(String, Option<&str>, Option<&str>, u16)> = vec![
        (gw.url("/production/predict"), m1, None, 401),
        (gw.url("/production/predict"), m1, Some("igw_wrong"), 401),
        (gw.url("/production/predict"), m1, Some(other_key), 403),
        (
            gw.url("/production/predict"),
            Some("model-zz.example.com"),
            Some(KEY),
            404,
        ),
        (gw.url("/environments/nope/predict"), m1, Some(KEY), 404),
        (gw.url("/environments/empty/predict"), m1, Some(KEY), 404),
        (gw.url("/deployment/nope/predict"), m1, Some(KEY), 404),
        (gw.url("/deployment/off/predict"), m1, Some(KEY), 404),
        (gw.url("/elsewhere/predict"), m1, Some(KEY), 404),
        (
            gw.url("/production/predict"),
            Some("example.com"),
            Some(KEY),
            404,
        ),
        (
            gw.url("/models/m2/production/predict"),
            None,
            Some(other_key),
            404,
        ),
    ];
    for (url, host, key, status) in cases {
        let resp = post(&url, host, key, "{}").await;
        assert_eq!(resp.status(), status, "{url} host={host:?} key={key:?}");
        assert_eq!(header(&resp, "content-type"), "application/json");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{url}: {body}"
        );
    }

    let resp = client()
        .get(gw.url("/models/m1/production/predict"))
        .header("authorization", format!("Api-Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(header(&resp, "allow"), "POST");
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_arrives_in_pieces() {
    let (a, b) = (engine("ra", &[]), engine("rb", &[]));
    let dev = engine("rdev", &["--stream-interval-ms", "300"]);
    let gw = gateway(&model_config("m1", &a, &b, &dev));
    let mut resp = post(
        &gw.url("/models/m1/development/predict"),
        None,
        Some(KEY),
        r#"{"inputs": ["a", "b", "c"], "stream": true}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let first = resp.chunk().await.unwrap().expect("a first piece");
    let first = String::from_utf8_lossy(&first).into_owned();
    // The replica sleeps 300 ms before each event: had anything buffered
    // the stream, the first piece would hold more than the first event.
    assert!(first.contains(r#""index":0"#), "{first}");
    assert!(
        !first.contains(r#""index":1"#) && !first.contains("[DONE]"),
        "{first}"
    );
    let mut rest = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        rest.contains(r#""index":2"#) && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let (a, b, dev) = (engine("ra", &[]), engine("rb", &[]), engine("rdev", &[]));
    let gw = testkit::gateway_with(
        "max_request_body_bytes = 1000",
        &model_config("m1", &a, &b, &dev),
    );
    let resp = post(
        &gw.url("/models/m1/production/predict"),
        None,
        Some(KEY),
        &"x".repeat(2000),
    )
    .await;
    assert_eq!(resp.status(), 413);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let resp = post(
        &gw.url("/models/m1/production/predict"),
        None,
        Some(KEY),
        r#"{"text":"small"}"#,
    )
    .await;
    assert_eq!(resp.status(), 200, "bodies under the limit pass");

    // A chunked body has no Content-Length: it is counted as it streams.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(gw.proc.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = "x".repeat(1500);
    write!(
        stream,
        "POST /models/m1/production/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Api-Key {KEY}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#"{"error":"request body too large"}"#),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_replicas_are_skipped_or_reported_as_502() {
    let live = engine("live", &[]);
    let dead = testkit::dead_addr().port();
    let config = format!(
        r#"
[[models]]
id = "m"
[[models.deployments]]
id = "mixed"
replicas = {{ source = "static", addresses = ["127.0.0.1:{dead}", "{}"] }}
[[models.deployments]]
id = "gone"
replicas = {{ source = "static", addresses = ["127.0.0.1:{dead}"] }}
queue = {{ timeout_secs = 1 }}
"#,
        live.addr
    );
    let gw = gateway(&config);
    for _ in 0..20 {
        let resp = post(
            &gw.url("/models/m/deployment/mixed/predict"),
            None,
            Some(KEY),
            r#"{"text":"x"}"#,
        )
        .await;
        assert_eq!(
            resp.status(),
            200,
            "a refused connection is retried on the other replica"
        );
        assert_eq!(header(&resp, "x-replica-id"), "live");
    }
    // Its only replica refuses connections: 502, which takes it out of
    // routing; later requests wait in the queue for a replica that never
    // comes, and get 503 with Retry-After at the queue timeout.
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let resp = post(
            &gw.url("/models/m/deployment/gone/predict"),
            None,
            Some(KEY),
            r#"{"text":"x"}"#,
        )
        .await;
        let status = resp.status().as_u16();
        if status == 503 {
            assert_eq!(header(&resp, "retry-after"), "5");
        }
        assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
        statuses.push(status);
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 502 || s == 503),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_models_route() {
    let replica = engine("r", &[]);
    let text = config::test_util::many_models_toml(10_000, &replica.addr.to_string());
    let gw = gateway(&text);
    for id in ["m0", "m5000", "m9999"] {
        for (path, deployment) in [("production", "a"), ("environments/staging", "b")] {
            let resp = post(
                &gw.url(&format!("/models/{id}/{path}/predict")),
                None,
                Some(KEY),
                r#"{"text":"x"}"#,
            )
            .await;
            assert_eq!(resp.status(), 200, "{id} {path}");
            assert_eq!(header(&resp, "x-deployment-id"), deployment);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let slow = engine("slow", &["--fixed-ms", "1500"]);
    let config = Model::new("m")
        .deployment(Deployment::fixed("d", &[slow.addr]))
        .toml();
    let mut gw = gateway(&config);
    let url = gw.url("/models/m/deployment/d/predict");
    let in_flight = tokio::spawn(async move {
        post(&url, None, Some(KEY), r#"{"text":"x"}"#)
            .await
            .status()
    });
    testkit::until_in_flight(&gw, "d", 1).await;
    gw.proc.signal("TERM");
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the in-flight request finished"
    );
    let status = gw
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exited within the grace period");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_promptly_even_with_requests_in_flight() {
    // A stream that would take 60 s: one event every 20 s.
    let slow = engine("slow", &["--stream-interval-ms", "20000"]);
    let config = Model::new("m")
        .deployment(Deployment::fixed("d", &[slow.addr]))
        .toml();
    let mut gw = gateway(&config);
    let url = gw.url("/models/m/deployment/d/predict");
    let stuck = post(
        &url,
        None,
        Some(KEY),
        r#"{"inputs": ["a", "b", "c"], "stream": true}"#,
    )
    .await;
    assert_eq!(stuck.status(), 200, "the stream has started");
    gw.proc.signal("INT");
    // A prompt exit does not wait for the stream to end.
    assert!(
        gw.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "gateway exited on SIGINT"
    );
    drop(stuck);
}
