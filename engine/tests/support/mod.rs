//! Starting real engine processes for the integration tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of this

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running replica, killed when dropped.
pub struct Replica {
    pub child: Child,
    pub base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Its `GET /info`.
    pub async fn info(&self) -> serde_json::Value {
        reqwest::get(self.url("/info"))
            .await
            .expect("GET /info")
            .json()
            .await
            .expect("/info is JSON")
    }
}

/// A started replica whose ready line has not been read yet.
pub struct Starting {
    replica: Replica,
}

impl Starting {
    /// Waits for the ready line (panics if the replica exits first).
    pub fn ready(&mut self) -> engine::ReadyLine {
        let child = &mut self.replica.child;
        let stdout = BufReader::new(child.stdout.take().expect("ready line read twice"));
        match engine::ReadyLine::read_from(stdout) {
            Ok(ready) => ready,
            Err(e) => {
                let status = child.wait();
                panic!("engine never became ready ({e}); it exited with {status:?}");
            }
        }
    }
}

/// Starts `engine` with `args` (listening on a free port unless they say
/// otherwise) without waiting for it.
pub fn spawn(args: &[&str]) -> Starting {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engine"));
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    let child = command
        .args(["--replica-id", "r7"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    Starting {
        replica: Replica {
            child,
            base: String::new(),
        },
    }
}

/// Starts `engine` on a free port with `args` and waits for its ready line,
/// which must name `backend`.
pub fn start(backend: &str, args: &[&str]) -> Replica {
    let mut starting = spawn(args);
    let ready = starting.ready();
    assert_eq!(ready.backend, backend);
    let mut replica = starting.replica;
    replica.base = format!("http://{}", ready.addr);
    replica
}

/// The repository's `models/` (filled by `scripts/fetch-models.sh`).
pub fn models() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    assert!(
        dir.join("onnxruntime/libonnxruntime.so").exists(),
        "{} has no ONNX Runtime: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// `libonnxruntime.so` from `models/`.
pub fn onnxruntime() -> String {
    models()
        .join("onnxruntime/libonnxruntime.so")
        .display()
        .to_string()
}

/// A file in `engine/tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One reference case computed with Python's onnxruntime.
#[derive(Debug, serde::Deserialize)]
pub struct Case {
    pub text: String,
    pub token_count: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

/// The cases of `engine/tests/fixtures/{name}`.
pub fn reference(name: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_json::from_str::<Reference>(&text).unwrap().cases
}

/// Largest absolute difference between two vectors of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The `embedding` of each output of a predict response.
pub fn embeddings(body: &serde_json::Value) -> Vec<Vec<f32>> {
    body["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| serde_json::from_value(o["embedding"].clone()).expect("embedding"))
        .collect()
}
