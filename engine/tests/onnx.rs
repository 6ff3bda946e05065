//! Real inference: the engine binary running all-MiniLM-L6-v2 (int8) on ONNX
//! Runtime must give the embeddings Python's onnxruntime gives.

use testkit::engine::Replica;
use testkit::onnx::{embeddings, max_abs_diff, minilm, onnxruntime, reference};

/// Batched and single runs agree to ~1e-7 (padding is masked out); the
/// margin covers f32 pooling and thread-count differences.
const TOLERANCE: f32 = 1e-5;

async fn post(http: &reqwest::Client, r: &Replica, body: &serde_json::Value) -> reqwest::Response {
    http.post(r.url("/predict"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn predict(
    http: &reqwest::Client,
    r: &Replica,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = post(http, r, &body).await;
    assert_eq!(resp.status(), 200, "{body}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn embeddings_match_the_python_onnxruntime_reference() {
    let r = minilm(&[]);
    let http = reqwest::Client::new();
    let cases = reference("minilm-reference.json");
    let fits: Vec<_> = cases.iter().filter(|c| c.token_count < 256).collect();
    assert!(fits.len() >= 5, "the fixture lost its cases");
    for case in &fits {
        let body = predict(&http, &r, serde_json::json!({ "text": case.text })).await;
        assert_eq!(body["backend"], "onnx");
        assert_eq!(
            body["outputs"][0]["tokens"], case.token_count,
            "{:?}",
            case.text
        );
        let got = &embeddings(&body)[0];
        assert_eq!(got.len(), 384);
        let diff = max_abs_diff(got, &case.embedding);
        assert!(diff < TOLERANCE, "{:?}: max diff {diff}", case.text);
    }
    // All of them in one request (run one input per model call, as
    // batching is off): same vectors.
    let texts: Vec<&str> = fits.iter().map(|c| c.text.as_str()).collect();
    let body = predict(&http, &r, serde_json::json!({ "inputs": texts })).await;
    for (got, case) in embeddings(&body).iter().zip(&fits) {
        let diff = max_abs_diff(got, &case.embedding);
        assert!(diff < TOLERANCE, "batched {:?}: max diff {diff}", case.text);
    }
}

#[tokio::test]
async fn concurrent_callers_are_batched_and_each_gets_its_own_embedding() {
    let r = minilm(&[
        "--max-batch-size",
        "16",
        "--predict-concurrency",
        "16",
        "--max-queue-delay-ms",
        "20",
        "--queue-size",
        "64",
    ]);
    let http = reqwest::Client::new();
    let cases = std::sync::Arc::new(reference("minilm-reference.json"));
    let fits: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].token_count < 256)
        .collect();
    let calls: Vec<_> = (0..24)
        .map(|n| {
            let (http, url, cases) = (http.clone(), r.url("/predict"), cases.clone());
            let i = fits[n % fits.len()];
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .json(&serde_json::json!({ "text": cases[i].text }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: serde_json::Value = resp.json().await.unwrap();
                (i, embeddings(&body).remove(0))
            })
        })
        .collect();
    for call in calls {
        let (i, got) = call.await.unwrap();
        let diff = max_abs_diff(&got, &cases[i].embedding);
        assert!(diff < TOLERANCE, "{:?}: max diff {diff}", cases[i].text);
    }
    // They really ran in batches: fewer backend calls than requests.
    let metrics = http
        .get(r.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let calls: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("igw_engine_batch_size_count "))
        .expect("batch size histogram")
        .parse()
        .unwrap();
    // 24 requests + 1 warm-up call; batches of up to 16 inputs.
    assert!(calls < 24.0, "{calls} backend calls for 24 requests");
}

#[tokio::test]
async fn text_longer_than_the_model_takes_gets_400_and_the_replica_stays_healthy() {
    let r = minilm(&["--max-body-bytes", "65536"]);
    let http = reqwest::Client::new();
    let long = reference("minilm-reference.json")
        .into_iter()
        .find(|c| c.token_count == 256)
        .expect("the fixture's long text")
        .text;
    for (body, status) in [
        (serde_json::json!({ "text": long }), 400),
        (serde_json::json!({ "inputs": ["fine", long] }), 400),
        (serde_json::json!({ "text": "x".repeat(70_000) }), 413),
        (serde_json::json!({ "text": 42 }), 400),
    ] {
        let resp = post(&http, &r, &body).await;
        assert_eq!(resp.status(), status);
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["error"].is_string(), "{json}");
        if status == 400 && body.get("inputs").is_some() {
            assert_eq!(
                json["error"],
                "input 1 is longer than this model's 256 tokens; send shorter text"
            );
        }
    }
    let ready = http.get(r.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body = predict(&http, &r, serde_json::json!({ "text": "still here" })).await;
    assert_eq!(embeddings(&body)[0].len(), 384);
}

#[test]
fn a_missing_model_file_stops_the_replica_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["--backend", "onnx", "--model", "/nonexistent/model.onnx"])
        .args(["--onnxruntime", &onnxruntime()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/"), "{stderr}");
}
