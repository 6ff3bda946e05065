//! `--watch`: a new model file is swapped in with no failed request, and a
//! broken one is reported while the old model keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use testkit::engine::start;
use testkit::onnx::{embeddings, fixture, max_abs_diff, onnxruntime, reference};

/// Replaces `dest` with `contents` the way editors and `cp` + `mv` do: a new
/// file renamed over the old one.
fn replace(dest: &std::path::Path, contents: &[u8]) {
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

/// Embeds `text` and says which reference it matches.
async fn which_model(http: &reqwest::Client, url: &str, text: &str) -> &'static str {
    let (a, b) = (
        reference("tiny-reference.json"),
        reference("tiny-b-reference.json"),
    );
    let resp = http
        .post(url)
        .json(&serde_json::json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = embeddings(&resp.json().await.unwrap()).remove(0);
    let find = |cases: &[testkit::onnx::Case]| {
        let case = cases.iter().find(|c| c.text == text).unwrap();
        max_abs_diff(&got, &case.embedding) < 1e-5
    };
    match (find(&a), find(&b)) {
        (true, false) => "a",
        (false, true) => "b",
        _ => panic!("{text:?} matches neither tiny model"),
    }
}

#[tokio::test]
async fn a_changed_model_file_is_swapped_in_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(fixture("tiny-embedder.onnx"), &model).unwrap();
    std::fs::copy(fixture("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let model_arg = model.display().to_string();
    let runtime = onnxruntime();
    let r = start(
        "onnx",
        &[
            "--backend",
            "onnx",
            "--model",
            &model_arg,
            "--onnxruntime",
            &runtime,
            "--watch",
        ],
    );
    let http = reqwest::Client::new();
    let url = r.url("/predict");
    let text = reference("tiny-reference.json").remove(0).text;
    assert_eq!(which_model(&http, &url, &text).await, "a");

    // A steady stream of requests throughout both swaps.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stream = {
        let (http, url, stop, ok, failed) = (
            http.clone(),
            url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = http.post(&url).body(r#"{"text": "steady"}"#).send().await;
                match resp {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    replace(
        &model,
        &std::fs::read(fixture("tiny-embedder-b.onnx")).unwrap(),
    );
    let mut swapped = false;
    for _ in 0..100 {
        if which_model(&http, &url, &text).await == "b" {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new model never served");

    // A broken file: reported, and model b keeps serving.
    replace(&model, b"this is not an onnx model");
    let mut reported = serde_json::Value::Null;
    for _ in 0..100 {
        let info: serde_json::Value = r.info().await;
        if info["model_reloads"]["failed"] == 1 {
            reported = info;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reported["model_reloads"]["applied"], 1, "{reported}");
    let error = reported["model_reloads"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("model.onnx"), "{reported}");
    assert_eq!(which_model(&http, &url, &text).await, "b");

    stop.store(true, Ordering::Relaxed);
    stream.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 10, "the stream barely ran");
    let ready = http.get(r.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// What the APIs say depends on the model serving now: after an embedding
/// model is swapped for a classifier, `/v1/embeddings` refuses with a 400
/// (not a 500 from a width remembered from the first model), and v2
/// metadata and infer give the classifier's labels.
#[tokio::test]
async fn the_apis_follow_a_model_swapped_for_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    let embedder = testkit::onnx::models().join("all-minilm-l6-v2-int8");
    std::fs::copy(embedder.join("model.onnx"), &model).unwrap();
    std::fs::copy(
        embedder.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let r = testkit::onnx::replica(&model, &["--watch", "--model-name", "swapped"]);
    let http = reqwest::Client::new();
    let embed = || {
        http.post(r.url("/v1/embeddings"))
            .json(&serde_json::json!({ "model": "swapped", "input": "a football match" }))
            .send()
    };
    let metadata_url = r.url("/v2/models/swapped");
    let resp = embed().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = testkit::get_json(&metadata_url).await;
    assert_eq!(
        body["outputs"][0]["shape"],
        serde_json::json!([-1, 384]),
        "{body}"
    );

    // The classifier's labels first, then the model itself.
    let classifier = testkit::onnx::classifier();
    std::fs::copy(
        classifier.with_file_name("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    replace(&model, &std::fs::read(&classifier).unwrap());
    let mut swapped = false;
    for _ in 0..100 {
        let predicted: serde_json::Value = http
            .post(r.url("/predict"))
            .json(&serde_json::json!({ "text": "a football match" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if predicted["outputs"][0].get("labels").is_some() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the classifier never served");

    let resp = embed().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("does not produce embeddings"), "{body}");
    let infer = http
        .post(r.url("/v2/models/swapped/infer"))
        .json(&serde_json::json!({
            "inputs": [{ "name": "text", "datatype": "BYTES", "shape": [1], "data": ["a football match"] }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(infer.status(), 200);
    let body: serde_json::Value = infer.json().await.unwrap();
    assert_eq!(body["outputs"][0]["name"], "labels", "{body}");
    let body = testkit::get_json(&metadata_url).await;
    assert_eq!(body["outputs"][0]["name"], "labels", "{body}");
    assert_eq!(
        body["outputs"][0]["shape"],
        serde_json::json!([-1, 6]),
        "{body}"
    );
}
