//! The engine binary as a provisioner and the gateway see it.

use std::time::Duration;

use config::{EngineBackend, EngineSettings, SyntheticSettings};

fn start(args: &[&str]) -> testkit::engine::Replica {
    testkit::engine::start("synthetic", args)
}

#[tokio::test]
async fn ready_line_health_and_predict() {
    let r = start(&["--load-delay-ms", "200"]);
    let http = reqwest::Client::new();
    let live = http
        .get(format!("{}/health/live", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // The ready line is printed only after loading and warm-up.
    let ready = http
        .get(format!("{}/health/ready", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let resp = http
        .post(format!("{}/predict", r.base))
        .body(r#"{"inputs": ["héllo", "ab"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-replica-id"], "r7");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["backend"], "synthetic");
    assert_eq!(body["outputs"][0]["chars"], 5);
    assert_eq!(body["outputs"][1]["chars"], 2);
}

#[tokio::test]
async fn bad_input_gets_4xx_json_and_the_replica_stays_healthy() {
    let r = start(&["--max-body-bytes", "100"]);
    let http = reqwest::Client::new();
    let predict = format!("{}/predict", r.base);
    for (body, status) in [
        ("not json".to_owned(), 400),
        (r#"{"wrong": 1}"#.to_owned(), 400),
        (r#"{"inputs": [1, 2]}"#.to_owned(), 400),
        (format!(r#"{{"text": "{}"}}"#, "x".repeat(200)), 413),
    ] {
        let resp = http.post(&predict).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["error"].is_string(), "{body}: {json}");
    }
    let get = http.get(&predict).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let ok = http
        .post(&predict)
        .body(r#"{"text": "fine"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn error_percent_fails_that_share_of_predictions_with_500_json() {
    // Every prediction fails, yet the replica becomes ready (the warm-up
    // is not a prediction) and stays live.
    let failing = start(&["--error-percent", "100"]);
    let http = reqwest::Client::new();
    for body in [r#"{"text": "x"}"#, r#"{"text": "x", "stream": true}"#] {
        let resp = http
            .post(failing.url("/predict"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500, "{body}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("synthetic failure"),
            "{json}"
        );
    }
    let ready = http.get(failing.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let info: serde_json::Value = failing.info().await;
    assert_eq!(info["engine"]["error_percent"], 100, "{info}");

    let healthy = start(&["--error-percent", "0"]);
    for _ in 0..20 {
        let resp = http
            .post(healthy.url("/predict"))
            .body(r#"{"text": "x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    // A share, at random per request: 200 at 50% fail 100 +- 40 times.
    let half = start(&["--error-percent", "50"]);
    let mut failed = 0;
    for _ in 0..200 {
        let resp = http
            .post(half.url("/predict"))
            .body(r#"{"text": "x"}"#)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            500 => failed += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut r = start(&["--fixed-ms", "500"]);
    let predict = format!("{}/predict", r.base);
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(predict)
            .body(r#"{"text":"x"}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    // SIGTERM once the prediction runs (the drain must finish it).
    let metrics = r.url("/metrics");
    testkit::eventually_async("the prediction runs", || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        testkit::metric_sum(&text, engine::telemetry::RUNNING, &[]) >= 1.0
    })
    .await;
    r.proc.signal("TERM");
    assert_eq!(pending.await.unwrap(), 200);
    let status = r.proc.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[tokio::test]
async fn beyond_concurrency_and_queue_the_excess_is_answered_busy_and_nothing_hangs() {
    // Long enough that all six calls arrive while the first one runs.
    let r = start(&[
        "--fixed-ms",
        "1000",
        "--predict-concurrency",
        "1",
        "--queue-size",
        "2",
    ]);
    let http = reqwest::Client::new();
    let predict = format!("{}/predict", r.base);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (http, predict) = (http.clone(), predict.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(predict)
                    .body(r#"{"text":"x"}"#)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").is_some();
                let body: serde_json::Value = resp.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let (status, retry_after, body) = call.await.unwrap();
        if status == 503 {
            // Busy: a 503 with Retry-After, which a gateway retries.
            assert!(
                retry_after && body["error"].as_str().unwrap().contains("capacity"),
                "{body}"
            );
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    // One runs, two wait their turn, three are refused.
    assert_eq!(statuses, vec![200, 200, 200, 503, 503, 503]);
    let after = http
        .post(&predict)
        .body(r#"{"text":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200, "capacity is released");
}

#[tokio::test]
async fn batching_runs_concurrent_requests_together_and_answers_each_caller() {
    let r = start(&[
        "--fixed-ms",
        "50",
        "--predict-concurrency",
        "8",
        "--max-batch-size",
        "8",
        "--max-queue-delay-ms",
        "1000",
    ]);
    let http = reqwest::Client::new();
    let predict = format!("{}/predict", r.base);
    let calls: Vec<_> = (1..=8usize)
        .map(|n| {
            let (http, predict) = (http.clone(), predict.clone());
            tokio::spawn(async move {
                let body = serde_json::json!({ "text": "x".repeat(n) }).to_string();
                let resp = http.post(predict).body(body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                (n, resp.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut largest_batch = 0;
    for call in calls {
        let (n, body) = call.await.unwrap();
        let output = &body["outputs"][0];
        assert_eq!(
            output["chars"].as_u64(),
            Some(n as u64),
            "caller {n} got its own result: {body}"
        );
        largest_batch = largest_batch.max(output["batch"].as_u64().unwrap());
    }
    assert!(
        largest_batch > 1,
        "concurrent requests within the queue delay share a batch"
    );
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let r = start(&["--max-batch-size", "4", "--predict-concurrency", "4"]);
    let http = reqwest::Client::new();
    let predict = format!("{}/predict", r.base);
    for _ in 0..3 {
        let ok = http
            .post(&predict)
            .body(r#"{"inputs": ["a", "b"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let bad = http.post(&predict).body("nope").send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let resp = http
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert_eq!(value(r#"igw_engine_requests_total{status="200"}"#), 3.0);
    assert_eq!(value(r#"igw_engine_requests_total{status="400"}"#), 1.0);
    assert_eq!(value("igw_engine_ready"), 1.0);
    // Three predictions of two inputs; the warm-up is not traffic.
    assert_eq!(value("igw_engine_batch_size_count"), 3.0);
    assert_eq!(value("igw_engine_batch_size_sum"), 6.0);
    assert_eq!(value("igw_engine_queue_wait_seconds_count"), 3.0);

    // promtool must accept the exposition (CI installs it).
    config::test_util::promtool_check(&text);
}

#[tokio::test]
async fn not_ready_and_no_predictions_until_the_model_has_loaded() {
    // The ready line comes after the load: the test needs the address
    // before it, so it names a port.
    let listen = testkit::dead_addr().to_string();
    let mut child = testkit::engine::spawn("r7", &["--listen", &listen, "--load-delay-ms", "1500"]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{listen}{path}");
    let mut live = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(url("/health/live")).send().await {
            live = r.status() == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(live, "the replica never answered /health/live");
    let ready = http.get(url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let predict = http
        .post(url("/predict"))
        .body(r#"{"text": "early"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(predict.status(), 503);
    let line = child.ready();
    assert_eq!(line.addr.to_string(), listen);
    let ready = http.get(url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn settings_passed_as_to_args_take_effect() {
    let settings = EngineSettings {
        backend: EngineBackend::Synthetic(SyntheticSettings {
            fixed: Duration::from_millis(5),
            per_item: Duration::from_millis(1),
            jitter: Duration::ZERO,
            load_delay: Duration::from_millis(20),
            error_percent: 0,
        }),
        predict_concurrency: 3,
        queue_size: 7,
        max_batch_size: 2,
        max_queue_delay: Duration::from_millis(4),
        max_inputs: 64,
        watch: false,
    };
    let args = settings.to_args();
    let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
    let r = start(&args);
    let http = reqwest::Client::new();
    let info: serde_json::Value = r.info().await;
    assert_eq!(
        info["engine"],
        serde_json::json!({
            "backend": "synthetic",
            "predict_concurrency": 3,
            "queue_size": 7,
            "max_batch_size": 2,
            "max_queue_delay_ms": 4,
            "max_inputs": 64,
            "watch": false,
            "fixed_ms": 5,
            "per_item_ms": 1,
            "jitter_ms": 0,
            "load_delay_ms": 20,
            "error_percent": 0,
        }),
        "{info}"
    );
    let started = tokio::time::Instant::now();
    let resp = http
        .post(r.url("/predict"))
        .body(r#"{"text": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(6),
        "fixed + per item"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_exit_on_stdin_eof_exits_when_stdin_closes() {
    // Killed (by its own pid) and reaped when dropped, whatever happens.
    let mut starting = testkit::engine::spawn_with_stdin("r7", &["--exit-on-stdin-eof"]);
    assert_eq!(starting.ready().backend, "synthetic");
    let mut r = starting.into_replica();
    assert!(r.proc.try_wait().is_none(), "it serves while stdin is open");

    r.proc.close_stdin();
    let status = tokio::task::block_in_place(|| r.proc.wait_exit(Duration::from_secs(10)))
        .expect("the replica exits within 10 s of its stdin closing");
    assert!(status.success(), "{status:?}");
}
