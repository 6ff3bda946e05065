//! Standard clients, unchanged, against the real model: OpenAI's Python
//! client through the gateway (`{prefix}/sync/v1`, the API key as its
//! bearer token), and tritonclient's HTTP client (KServe v2) against the
//! replica. Their vectors must be `/predict`'s. The clients run in the
//! `.venv` that `scripts/python-env.sh` makes.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use testkit::fixture::{Deployment, Model};
use testkit::onnx::{embeddings, max_abs_diff, minilm, venv_python};
use testkit::{KEY, client, gateway};

/// The Python script `name` beside this test, run with `args`; its stdout
/// is one JSON document.
fn run_client(name: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name);
    let out = Command::new(venv_python())
        .arg(&script)
        .args(args)
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn the_openai_client_gets_the_predict_vectors_through_the_gateway() {
    let replica = minilm(&["--model-name", "minilm"]);
    let addr = replica.proc.addr;
    let gw = gateway(
        &Model::new("demo1")
            .deployment(Deployment::fixed("v1", &[addr]))
            .environment("production", "v1")
            .toml(),
    );
    let predicted = |texts: Vec<&'static str>| {
        let url = gw.url("/models/demo1/environments/production/predict");
        async move {
            let resp = client()
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({ "inputs": texts }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            (embeddings(&body), body["outputs"][0]["tokens"].clone())
        }
    };
    let base = gw.url("/models/demo1/environments/production/sync/v1");
    let answer = tokio::task::spawn_blocking(move || {
        run_client("openai_embeddings.py", &[&base, KEY, "demo1"])
    })
    .await
    .unwrap();

    let (single, tokens) = predicted(vec!["a canary rollout shifts traffic"]).await;
    let got = vectors(&answer["single"]);
    assert_eq!(got.len(), 1);
    assert!(max_abs_diff(&got[0], &single[0]) <= 1e-6, "base64 vector");
    assert_eq!(answer["single_usage"], tokens);

    let (listed, _) = predicted(vec!["first sentence", "héllo wörld"]).await;
    let got = vectors(&answer["list"]);
    assert_eq!(got.len(), 2);
    for (g, want) in got.iter().zip(&listed) {
        assert!(max_abs_diff(g, want) <= 1e-6, "float vector");
    }
    assert_eq!(answer["list_index"], json!([0, 1]));
    assert_eq!(answer["model"], "minilm");

    let bad = &answer["bad"];
    assert_eq!(bad["status"], 400, "{answer}");
    assert_eq!(bad["type"], "invalid_request_error");
    assert_eq!(bad["param"], "input");
}

#[tokio::test]
async fn tritonclient_infers_against_a_replica() {
    let replica = minilm(&["--model-name", "minilm"]);
    let texts = ["first sentence", "the second one"];
    let resp = client()
        .post(replica.url("/predict"))
        .json(&json!({ "inputs": texts }))
        .send()
        .await
        .unwrap();
    let expected = embeddings(&resp.json().await.unwrap());
    let addr = replica.proc.addr.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        run_client("triton_infer.py", &[&addr, "minilm", texts[0], texts[1]])
    })
    .await
    .unwrap();
    assert_eq!(answer["ready"], true);
    assert_eq!(answer["metadata"]["name"], "minilm");
    assert_eq!(answer["shape"], json!([2, 384]));
    for (g, want) in vectors(&answer["embedding"]).iter().zip(&expected) {
        assert_eq!(g, want, "binary FP32 is exact");
    }
}
