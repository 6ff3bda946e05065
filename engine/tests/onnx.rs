//! Real inference: the engine binary running all-MiniLM-L6-v2 (int8) on ONNX
//! Runtime must give the embeddings Python's onnxruntime gives, and the
//! topic classifier built from it (`scripts/make-classifier.py`) the
//! scores.

use engine::Output;
use engine::backend::{Classification, Input};
use engine::text::TextModel;
use testkit::engine::Replica;
use testkit::onnx::{
    ClassifierCase, classifier, classifier_reference, embeddings, max_abs_diff, minilm,
    onnxruntime, reference, replica,
};

/// Batched and single runs agree to ~1e-7 (padding is masked out); the
/// margin covers f32 pooling and thread-count differences.
const TOLERANCE: f32 = 1e-5;

/// Classifier scores: logits are 20 x a cosine similarity, so the
/// embeddings' 1e-6 differences grow ~20x before the softmax; a model
/// rebuilt on another CPU may also differ in its label vectors' last bits.
const SCORE_TOLERANCE: f32 = 1e-4;

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

/// The classifier's output, checked against its reference case: the same
/// token count, every label's score within [`SCORE_TOLERANCE`], best first,
/// and the same top label.
fn check_classification(got: &Classification, case: &ClassifierCase, labels: &[String]) {
    let text = &case.text;
    assert_eq!(got.tokens, case.token_count, "{text:?}");
    assert_eq!(got.labels.len(), labels.len(), "{text:?}: every label");
    assert_eq!(got.labels[0].label, case.top, "{text:?}: top label");
    assert!(
        got.labels.windows(2).all(|w| w[0].score >= w[1].score),
        "{text:?}: best first: {got:?}"
    );
    for (label, want) in labels.iter().zip(&case.scores) {
        let score = got
            .labels
            .iter()
            .find(|l| &l.label == label)
            .unwrap_or_else(|| panic!("{text:?}: no {label}: {got:?}"))
            .score;
        assert!(
            (score - want).abs() < SCORE_TOLERANCE,
            "{text:?}: {label} {score}, expected {want}"
        );
    }
}

fn classification(output: &Output) -> &Classification {
    match output {
        Output::Classification(c) => c,
        other => panic!("not a classification: {other:?}"),
    }
}

#[test]
fn classifier_scores_match_the_python_onnxruntime_reference() {
    let model = classifier();
    let settings = config::TextModelSettings {
        tokenizer: model.with_file_name("tokenizer.json"),
        model,
        runtime_library: Some(onnxruntime().into()),
        max_tokens: 256,
        max_request_tokens: config::TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS,
        threads: 0,
    };
    let model = TextModel::load(&config::EngineBackend::Onnx(settings)).unwrap();
    let reference = classifier_reference();
    // The labels are named by the config.json beside the model.
    assert_eq!(
        reference.labels,
        [
            "sports",
            "politics",
            "technology",
            "business",
            "health",
            "entertainment"
        ]
    );
    assert!(reference.cases.len() >= 12, "the fixture lost its cases");
    let inputs: Vec<Input> = reference
        .cases
        .iter()
        .map(|c| Input::Text(c.text.clone()))
        .collect();
    for (input, case) in inputs.iter().zip(&reference.cases) {
        let out = model.infer(std::slice::from_ref(input)).unwrap();
        check_classification(classification(&out[0]), case, &reference.labels);
    }
    // All in one padded batch: padding is masked out of the pooling.
    let out = model.infer(&inputs).unwrap();
    for (output, case) in out.iter().zip(&reference.cases) {
        check_classification(classification(output), case, &reference.labels);
    }
}

#[tokio::test]
async fn a_classifier_replica_answers_predict_with_labels_best_first() {
    let r = replica(&classifier(), &[]);
    let http = reqwest::Client::new();
    let reference = classifier_reference();
    let cases: Vec<&ClassifierCase> = reference
        .cases
        .iter()
        .filter(|c| c.topic.is_some())
        .take(4)
        .collect();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let body = predict(&http, &r, serde_json::json!({ "inputs": texts })).await;
    assert_eq!(body["backend"], "onnx");
    let outputs = body["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), cases.len());
    for (output, case) in outputs.iter().zip(&cases) {
        // {"labels": [{"label": "sports", "score": 0.93}, ...], "tokens": N}
        assert_eq!(output["tokens"], case.token_count, "{output}");
        let labels = output["labels"].as_array().expect("labels");
        assert_eq!(labels.len(), reference.labels.len(), "{output}");
        assert_eq!(labels[0]["label"], case.top, "{output}");
        let scores: Vec<f64> = labels
            .iter()
            .map(|l| l["score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "best first: {output}"
        );
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{output}");
        let top = reference
            .labels
            .iter()
            .position(|l| *l == case.top)
            .unwrap();
        assert!(
            (scores[0] - f64::from(case.scores[top])).abs() < 1e-4,
            "{output}"
        );
    }
}

#[tokio::test]
async fn a_classifier_replica_refuses_openai_embeddings_and_answers_v2_with_labels() {
    let r = replica(&classifier(), &["--model-name", "topics"]);
    let http = reqwest::Client::new();
    let openai = http
        .post(r.url("/v1/embeddings"))
        .json(&serde_json::json!({ "model": "topics", "input": "a text" }))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 400);
    let body: serde_json::Value = openai.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "this replica's model does not produce embeddings"
    );

    let reference = classifier_reference();
    let width = reference.labels.len();
    let metadata = testkit::get_json(&r.url("/v2/models/topics")).await;
    assert_eq!(
        metadata["outputs"],
        serde_json::json!([
            { "name": "labels", "datatype": "BYTES", "shape": [-1, width] },
            { "name": "scores", "datatype": "FP32", "shape": [-1, width] },
            { "name": "tokens", "datatype": "INT64", "shape": [-1] },
        ]),
        "{metadata}"
    );

    // JSON: the labels and scores /predict gives, best first.
    let texts = [
        "The striker scored twice in the final.",
        "Stocks fell sharply.",
    ];
    let predicted = predict(&http, &r, serde_json::json!({ "inputs": texts })).await;
    let v2: serde_json::Value = http
        .post(r.url("/v2/models/topics/infer"))
        .json(&serde_json::json!({ "inputs": [{ "name": "text", "shape": [2], "datatype": "BYTES", "data": texts }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let [labels, scores, tokens] = [0, 1, 2].map(|i| &v2["outputs"][i]);
    assert_eq!(labels["name"], "labels", "{v2}");
    assert_eq!(labels["datatype"], "BYTES");
    assert_eq!(labels["shape"], serde_json::json!([2, width]));
    assert_eq!(scores["shape"], serde_json::json!([2, width]));
    let (names, values) = (
        labels["data"].as_array().unwrap(),
        scores["data"].as_array().unwrap(),
    );
    for (t, output) in predicted["outputs"].as_array().unwrap().iter().enumerate() {
        assert_eq!(tokens["data"][t], output["tokens"], "{v2}");
        for (j, expected) in output["labels"].as_array().unwrap().iter().enumerate() {
            assert_eq!(names[t * width + j], expected["label"], "{v2}");
            let (got, want) = (
                values[t * width + j].as_f64().unwrap(),
                expected["score"].as_f64().unwrap(),
            );
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    // Binary: BYTES elements as a u32 length and the bytes, then the FP32
    // scores, in the order the outputs are listed.
    let resp = http
        .post(r.url("/v2/models/topics/infer"))
        .json(&serde_json::json!({
            "inputs": [{ "name": "text", "shape": [2], "datatype": "BYTES", "data": texts }],
            "outputs": [{ "name": "labels" }, { "name": "scores" }],
            "parameters": { "binary_data_output": true },
        }))
        .send()
        .await
        .unwrap();
    let (head, tail) = testkit::engine::v2_binary_answer(resp).await;
    let labels_size = head["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    let mut rest = &tail[..labels_size];
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        decoded.push(std::str::from_utf8(&rest[4..4 + len]).unwrap().to_owned());
        rest = &rest[4 + len..];
    }
    assert_eq!(
        decoded,
        names
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    let floats: Vec<f32> = tail[labels_size..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats.len(), 2 * width);
    for (got, want) in floats.iter().zip(values) {
        assert!((f64::from(*got) - want.as_f64().unwrap()).abs() < 1e-6);
    }
}
