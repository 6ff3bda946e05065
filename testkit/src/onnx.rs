//! The real models for the engine's ONNX tests: the files
//! `scripts/fetch-models.sh` puts in `models/` (the MiniLM embedding model
//! and the topic classifier built from it), the reference outputs in
//! `engine/tests/fixtures/`, and comparing embeddings.

use std::path::PathBuf;

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

/// The topic classifier's `model.onnx` (with its `tokenizer.json` and
/// `config.json` beside it), built by `scripts/fetch-models.sh`.
pub fn classifier() -> PathBuf {
    let model = models().join("minilm-topics/model.onnx");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        model.display()
    );
    model
}

/// A file in `engine/tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/tests/fixtures")
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

/// One classifier reference case computed with Python's onnxruntime
/// (`scripts/make-classifier.py --fixture`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClassifierCase {
    pub text: String,
    /// The hand-written right answer, if the text has one.
    pub topic: Option<String>,
    pub token_count: usize,
    /// Softmax of the logits, by label index.
    pub scores: Vec<f32>,
    /// The label with the highest score.
    pub top: String,
}

/// `engine/tests/fixtures/minilm-topics-reference.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClassifierReference {
    /// Label names by index.
    pub labels: Vec<String>,
    pub cases: Vec<ClassifierCase>,
}

/// The classifier's reference outputs.
pub fn classifier_reference() -> ClassifierReference {
    let text = std::fs::read_to_string(fixture("minilm-topics-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
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

/// The Python of `.venv` (made by `scripts/python-env.sh`), which has the
/// `openai` and `tritonclient` clients and ONNX Runtime.
pub fn venv_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh",
        python.display()
    );
    python
}

/// A replica running all-MiniLM-L6-v2 (int8) on ONNX Runtime, with
/// `extra` arguments.
pub fn minilm(extra: &[&str]) -> crate::engine::Replica {
    replica(&models().join("all-minilm-l6-v2-int8/model.onnx"), extra)
}

/// A replica running the ONNX model `model` on the fetched ONNX Runtime,
/// with `extra` arguments.
pub fn replica(model: &std::path::Path, extra: &[&str]) -> crate::engine::Replica {
    let model = model.display().to_string();
    let runtime = onnxruntime();
    let mut args = vec![
        "--backend",
        "onnx",
        "--model",
        &model,
        "--onnxruntime",
        &runtime,
    ];
    args.extend_from_slice(extra);
    crate::engine::start("onnx", &args)
}
