//! The standard APIs of a replica running the real model: OpenAI's
//! `/v1/embeddings` and `/v1/models`, and the Open Inference Protocol
//! (KServe v2), each giving the vectors `POST /predict` gives.

use base64::Engine as _;
use serde_json::{Value, json};
use testkit::engine::Replica;
use testkit::onnx::{embeddings, max_abs_diff, models};

const NAME: &str = "minilm";

fn minilm() -> Replica {
    testkit::onnx::minilm(&[
        "--model-name",
        NAME,
        "--max-batch-size",
        "4",
        "--predict-concurrency",
        "8",
        "--max-inputs",
        "4",
    ])
}

async fn post(r: &Replica, path: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(r.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn get(r: &Replica, path: &str) -> (u16, Value) {
    let resp = reqwest::get(r.url(path)).await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `/predict`'s vectors for `texts`.
async fn predicted(r: &Replica, texts: &[&str]) -> Vec<Vec<f32>> {
    let (status, body) = post(r, "/predict", &json!({ "inputs": texts })).await;
    assert_eq!(status, 200, "{body}");
    embeddings(&body)
}

fn floats(v: &Value) -> Vec<f32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The token ids of `text` in the model's vocabulary, without special
/// tokens (what an OpenAI client sends as a token-array input).
fn token_ids(text: &str) -> Vec<u32> {
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(models().join("all-minilm-l6-v2-int8/tokenizer.json"))
            .unwrap();
    // The file pads every text to 128 tokens.
    tokenizer.with_padding(None);
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

#[tokio::test]
async fn openai_embeddings_are_the_predict_vectors_in_every_input_shape_and_encoding() {
    let r = minilm();
    let texts = ["a canary rollout shifts traffic", "héllo wörld"];
    let expected = predicted(&r, &texts).await;

    let (status, one) = post(
        &r,
        "/v1/embeddings",
        &json!({ "model": "x", "input": texts[0] }),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], NAME);
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    assert_eq!(floats(&one["data"][0]["embedding"]), expected[0]);
    let tokens = token_ids(texts[0]).len() + 2; // [CLS] ... [SEP]
    assert_eq!(one["usage"]["prompt_tokens"], tokens);
    assert_eq!(one["usage"]["total_tokens"], tokens);

    let (status, list) = post(
        &r,
        "/v1/embeddings",
        &json!({ "model": NAME, "input": texts, "dimensions": 384 }),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(list["data"][i]["index"], i);
        assert_eq!(&floats(&list["data"][i]["embedding"]), want);
    }

    // base64: little-endian f32 bytes, the very same values.
    let (status, b64) = post(
        &r,
        "/v1/embeddings",
        &json!({ "model": NAME, "input": texts, "encoding_format": "base64" }),
    )
    .await;
    assert_eq!(status, 200, "{b64}");
    for (i, want) in expected.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let got: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(&got, want);
    }

    // Token ids, one input or several: the text's vectors.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| token_ids(t)).collect();
    let (status, single) = post(
        &r,
        "/v1/embeddings",
        &json!({ "model": NAME, "input": ids[0] }),
    )
    .await;
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    assert!(max_abs_diff(&floats(&single["data"][0]["embedding"]), &expected[0]) < 1e-6);
    let (status, lists) = post(
        &r,
        "/v1/embeddings",
        &json!({ "model": NAME, "input": ids }),
    )
    .await;
    assert_eq!(status, 200, "{lists}");
    for (i, want) in expected.iter().enumerate() {
        assert!(max_abs_diff(&floats(&lists["data"][i]["embedding"]), want) < 1e-6);
    }
    assert_eq!(
        lists["usage"]["prompt_tokens"],
        ids.iter().map(|i| i.len() + 2).sum::<usize>()
    );
}

#[tokio::test]
async fn openai_errors_come_in_openais_shape_with_the_right_status() {
    let r = minilm();
    let cases = [
        (json!({ "input": "x" }), "model"),
        (json!({ "model": 1, "input": "x" }), "model"),
        (json!({ "model": NAME }), "input"),
        (json!({ "model": NAME, "input": 3 }), "input"),
        (json!({ "model": NAME, "input": [] }), "input"),
        (json!({ "model": NAME, "input": ["a", ""] }), "input"),
        (json!({ "model": NAME, "input": ["a", 1] }), "input"),
        (
            json!({ "model": NAME, "input": ["a", "b", "c", "d", "e"] }),
            "input",
        ),
        (
            json!({ "model": NAME, "input": [[1], [2], [3], [4], [5]] }),
            "input",
        ),
        (json!({ "model": NAME, "input": [1, 999_999] }), "input"),
        (
            json!({ "model": NAME, "input": "x", "dimensions": 128 }),
            "dimensions",
        ),
        (
            json!({ "model": NAME, "input": "x", "dimensions": 0 }),
            "dimensions",
        ),
        (
            json!({ "model": NAME, "input": "x", "encoding_format": "int8" }),
            "encoding_format",
        ),
        (
            json!({ "model": NAME, "input": "word ".repeat(400) }),
            "input",
        ),
    ];
    for (body, param) in cases {
        let (status, answer) = post(&r, "/v1/embeddings", &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let error = &answer["error"];
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["param"], param, "{body} -> {answer}");
        assert!(!error["message"].as_str().unwrap().is_empty());
        assert!(error.get("code").is_some(), "{answer}");
    }
    let resp = reqwest::Client::new()
        .post(r.url("/v1/embeddings"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "invalid_request_error");

    let (status, missing) = post(&r, "/v1/chat/completions", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found");
    let (status, wrong) = get(&r, "/v1/embeddings").await;
    assert_eq!(status, 405, "{wrong}");
}

#[tokio::test]
async fn v1_models_lists_the_served_model() {
    let r = minilm();
    let (status, list) = get(&r, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], NAME);
    assert_eq!(list["data"][0]["object"], "model");
    assert!(list["data"][0]["created"].as_u64().unwrap() > 1_600_000_000);
    let (status, one) = get(&r, &format!("/v1/models/{NAME}")).await;
    assert_eq!((status, &one["id"]), (200, &json!(NAME)));
    let (status, other) = get(&r, "/v1/models/gpt-4").await;
    assert_eq!(status, 404, "{other}");
}

#[tokio::test]
async fn kserve_v2_health_metadata_and_json_infer() {
    let r = minilm();
    assert_eq!(
        get(&r, "/v2/health/ready").await,
        (200, json!({ "ready": true }))
    );
    assert_eq!(get(&r, "/v2/health/live").await.0, 200);
    assert_eq!(get(&r, &format!("/v2/models/{NAME}/ready")).await.0, 200);
    let (status, meta) = get(&r, &format!("/v2/models/{NAME}")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], NAME);
    assert_eq!(
        meta["inputs"][0],
        json!({ "name": "text", "datatype": "BYTES", "shape": [-1] })
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 384]));
    assert_eq!(get(&r, "/v2/models/other").await.0, 404);

    let texts = ["first sentence", "the second one"];
    let expected = predicted(&r, &texts).await;
    for data in [json!(texts), json!([[texts[0]], [texts[1]]])] {
        let shape = if data[0].is_array() {
            json!([2, 1])
        } else {
            json!([2])
        };
        let request = json!({
            "id": "req-7",
            "inputs": [{ "name": "text", "shape": shape, "datatype": "BYTES", "data": data }],
        });
        let (status, answer) = post(&r, &format!("/v2/models/{NAME}/infer"), &request).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["model_name"], NAME);
        assert_eq!(answer["id"], "req-7");
        let embedding = &answer["outputs"][0];
        assert_eq!(embedding["name"], "embedding");
        assert_eq!(embedding["datatype"], "FP32");
        assert_eq!(embedding["shape"], json!([2, 384]));
        let flat = floats(&embedding["data"]);
        assert_eq!(flat[..384], expected[0][..]);
        assert_eq!(flat[384..], expected[1][..]);
        assert_eq!(answer["outputs"][1]["name"], "tokens");
        assert_eq!(answer["outputs"][1]["datatype"], "INT64");
        assert_eq!(answer["outputs"][1]["data"], json!([4, 5]));
    }

    let bad = [
        json!({ "inputs": [{ "name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"] }] }),
        json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "FP32", "data": [1.0] }] }),
        json!({ "inputs": [{ "name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"] }] }),
        json!({ "inputs": [{ "name": "text", "shape": [5], "datatype": "BYTES", "data": ["a", "b", "c", "d", "e"] }] }),
        json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"] }], "outputs": [{ "name": "logits" }] }),
        json!({ "inputs": [] }),
    ];
    for request in bad {
        let (status, answer) = post(&r, &format!("/v2/models/{NAME}/infer"), &request).await;
        assert_eq!(status, 400, "{request} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn kserve_v2_binary_tensors_both_ways() {
    let r = minilm();
    let texts = ["binary in", "and binary out"];
    let expected = predicted(&r, &texts).await;
    let mut tensor = Vec::new();
    for t in texts {
        tensor.extend_from_slice(&(t.len() as u32).to_le_bytes());
        tensor.extend_from_slice(t.as_bytes());
    }
    let head = json!({
        "inputs": [{ "name": "text", "shape": [2, 1], "datatype": "BYTES", "parameters": { "binary_data_size": tensor.len() } }],
        "outputs": [{ "name": "embedding", "parameters": { "binary_data": true } }, { "name": "tokens" }],
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&tensor);
    let resp = reqwest::Client::new()
        .post(r.url(&format!("/v2/models/{NAME}/infer")))
        .header("inference-header-content-length", head.len())
        .body(body)
        .send()
        .await
        .unwrap();
    let (answer, tail) = testkit::engine::v2_binary_answer(resp).await;
    let embedding = &answer["outputs"][0];
    assert_eq!(embedding["parameters"]["binary_data_size"], 2 * 384 * 4);
    assert!(embedding.get("data").is_none());
    assert_eq!(
        answer["outputs"][1]["data"].as_array().unwrap().len(),
        2,
        "tokens stay JSON"
    );
    let values: Vec<f32> = tail
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), 2 * 384);
    assert_eq!(values[..384], expected[0][..]);
    assert_eq!(values[384..], expected[1][..]);
}
