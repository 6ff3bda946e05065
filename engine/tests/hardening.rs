//! Hostile requests and connections against real engine processes: the
//! query of death (security review H2) and the HTTP server's limits (L7).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::engine::{Replica, start};
use testkit::onnx::{embeddings, max_abs_diff, minilm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Batched and single runs of the same text agree to ~1e-7 (padding is
/// masked out); the margin covers f32 pooling differences.
const TOLERANCE: f32 = 1e-5;

/// How much a replica's resident memory may grow over a refused query of
/// death. A padded batch of the whole request would need gigabytes.
const RSS_SLACK_BYTES: u64 = 50 << 20;

/// Longest any single awaited event may take before the test gives up,
/// so a regression fails instead of hanging. Not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(30);

/// About 245 tokens for all-MiniLM-L6-v2: just under its 256.
fn long_sentence() -> String {
    "the quick brown fox jumps over the lazy dog ".repeat(27)
}

/// `count` empty strings, then `last`.
fn poison(count: usize, last: &str) -> Vec<String> {
    let mut inputs = vec![String::new(); count];
    inputs.push(last.to_owned());
    inputs
}

async fn post(r: &Replica, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(r.url("/predict"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The replica's resident set, from `/proc/<pid>/status`.
fn rss_bytes(r: &Replica) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", r.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"));
    kib * 1024
}

#[tokio::test]
async fn a_query_of_death_gets_400_and_leaves_the_replica_as_it_was() {
    let r = minilm(&[]);
    let sentence = long_sentence();
    // A first real request, so the runtime's buffers exist before measuring.
    let (status, _) = post(&r, &json!({ "text": sentence })).await;
    assert_eq!(status, 200);
    let before = rss_bytes(&r);

    for stream in [false, true] {
        let body = json!({ "inputs": poison(10_000, &sentence), "stream": stream });
        let (status, json) = post(&r, &body).await;
        assert_eq!(status, 400, "stream: {stream}: {json}");
        assert_eq!(
            json["error"], "too many inputs: 10001 > 256; send at most 256 per request",
            "stream: {stream}"
        );
    }
    let after = rss_bytes(&r);
    assert!(
        after <= before + RSS_SLACK_BYTES,
        "RSS grew from {before} to {after} bytes"
    );

    // The same shape at the cap runs, one input per model call (batching
    // is off), instead of one [256 x 245] padded batch.
    let (status, json) = post(&r, &json!({ "inputs": poison(255, &sentence) })).await;
    assert_eq!(status, 200, "{json}");
    let outputs = json["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 256);
    assert_eq!(outputs[0]["tokens"], 2, "[CLS] [SEP]");
    assert!(outputs[255]["tokens"].as_u64().unwrap() > 240);
    let at_cap = rss_bytes(&r);
    assert!(
        at_cap <= before + RSS_SLACK_BYTES,
        "RSS grew from {before} to {at_cap} bytes"
    );

    let (status, json) = post(&r, &json!({ "text": "still here" })).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(embeddings(&json)[0].len(), 384);
}

#[tokio::test]
async fn too_many_tokens_in_one_request_get_400_before_the_model_runs() {
    let r = minilm(&["--max-request-tokens", "300", "--max-inputs", "8"]);
    let sentence = long_sentence();
    let (status, json) = post(&r, &json!({ "inputs": [sentence, sentence, "x"] })).await;
    assert_eq!(status, 400, "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.starts_with("too many tokens: ")
            && error.contains("> 300 in the first 2 of 3 inputs"),
        "{error}"
    );
    let (status, json) = post(&r, &json!({ "inputs": [sentence, "x"] })).await;
    assert_eq!(status, 200, "{json}");
    let info = r.info().await;
    assert_eq!(info["engine"]["max_inputs"], 8, "{info}");
    assert_eq!(info["engine"]["max_request_tokens"], 300, "{info}");
}

#[test]
fn a_request_token_cap_below_one_input_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(["--backend", "onnx", "--model", "/nonexistent/model.onnx"])
        .args(["--max-tokens", "256", "--max-request-tokens", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`max_request_tokens` (100) is below `max_tokens` (256)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_request_larger_than_a_batch_runs_in_batches_and_keeps_its_order() {
    let r = minilm(&[
        "--max-batch-size",
        "4",
        "--predict-concurrency",
        "4",
        "--max-inputs",
        "16",
    ]);
    let texts: Vec<String> = (0..11)
        .map(|i| format!("sentence number {i} {}", "and more words ".repeat(i)))
        .collect();
    let (status, json) = post(&r, &json!({ "inputs": texts })).await;
    assert_eq!(status, 200, "{json}");
    let together = embeddings(&json);
    assert_eq!(together.len(), texts.len());
    for (text, got) in texts.iter().zip(&together) {
        let (status, alone) = post(&r, &json!({ "text": text })).await;
        assert_eq!(status, 200);
        let diff = max_abs_diff(got, &embeddings(&alone)[0]);
        assert!(diff < TOLERANCE, "{text:?}: max diff {diff}");
    }
    let (status, json) = post(&r, &json!({ "inputs": vec!["x"; 17] })).await;
    assert_eq!(
        (status, &json["error"]),
        (
            400,
            &json!("too many inputs: 17 > 16; send at most 16 per request")
        )
    );
}

#[tokio::test]
async fn no_backend_call_takes_more_than_max_batch_size_inputs() {
    for (batch, args) in [
        (
            4,
            &["--max-batch-size", "4", "--predict-concurrency", "4"][..],
        ),
        (1, &[][..]),
    ] {
        let r = start_synthetic(args);
        let texts: Vec<String> = (1..=10).map(|n| "x".repeat(n)).collect();
        let (status, json) = post(&r, &json!({ "inputs": texts })).await;
        assert_eq!(status, 200, "{json}");
        let outputs = json["outputs"].as_array().unwrap();
        let chars: Vec<u64> = outputs
            .iter()
            .map(|o| o["chars"].as_u64().unwrap())
            .collect();
        assert_eq!(chars, (1..=10).collect::<Vec<u64>>(), "in order");
        let largest = outputs.iter().map(|o| o["batch"].as_u64().unwrap()).max();
        assert_eq!(largest, Some(batch), "{json}");
    }
}

fn start_synthetic(args: &[&str]) -> Replica {
    start("synthetic", args)
}

/// One complete response on a raw connection (headers and a
/// `Content-Length` body), or `None` if the server closed it first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: replica\r\n\r\n";

/// Connects to the replica of `base` (`http://ADDR`).
async fn connect(r: &Replica) -> TcpStream {
    TcpStream::connect(r.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// True once the peer has closed `stream` (end of file or a reset); any
/// bytes read before that are a failure.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("the replica answered a request it never got"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_stalled_request_head_and_an_idle_connection_are_closed() {
    let r = start_synthetic(&["--header-read-timeout-secs", "1"]);
    let mut stalled = connect(&r).await;
    stalled
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: rep")
        .await
        .unwrap();
    assert!(
        closed_by_peer(&mut stalled).await,
        "a half-sent head stays open"
    );

    // The same timeout ends a keep-alive connection idle after a response.
    let mut idle = connect(&r).await;
    idle.write_all(LIVE).await.unwrap();
    let response = read_response(&mut idle).await.expect("a response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        closed_by_peer(&mut idle).await,
        "an idle connection stays open"
    );
}

#[tokio::test]
async fn at_the_connection_cap_a_new_connection_waits_to_be_accepted() {
    let r = start_synthetic(&["--max-connections", "2", "--header-read-timeout-secs", "60"]);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut conn = connect(&r).await;
        conn.write_all(LIVE).await.unwrap();
        let response = read_response(&mut conn).await.expect("a response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        open.push(conn);
    }
    // The kernel completes the handshake (listen backlog), but the replica
    // does not take the connection while two are open: its request waits.
    let mut third = connect(&r).await;
    third.write_all(LIVE).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), read_response(&mut third)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");

    // One closes: the waiting connection is accepted and answered.
    drop(open.remove(0));
    let response = tokio::time::timeout(PATIENCE, read_response(&mut third))
        .await
        .expect("the waiting connection was never served")
        .expect("a response, not a close");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The one still open was not disturbed.
    open[0].write_all(LIVE).await.unwrap();
    let response = read_response(&mut open[0]).await.expect("a response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
