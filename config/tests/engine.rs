//! A replica's `[engine]` settings, alone in their file or in a deployment.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{EngineBackend, SyntheticSettings, load_engine_file, load_engine_str, load_str};

fn messages(text: &str) -> Vec<String> {
    common::located(load_engine_str(text, "replica.toml").unwrap_err())
}

#[test]
fn an_onnx_replica_gets_defaults_and_the_tokenizer_beside_its_model() {
    let s = load_engine_str(
        "[engine]\nbackend = \"onnx\"\nmodel = \"m/model.onnx\"\nmax_batch_size = 16\npredict_concurrency = 16\n",
        "replica.toml",
    )
    .unwrap();
    assert_eq!(s.predict_concurrency, 16);
    assert_eq!(s.queue_size, 16);
    assert_eq!(s.max_batch_size, 16);
    assert_eq!(s.max_queue_delay, Duration::from_millis(2));
    assert!(!s.watch);
    let EngineBackend::Onnx(m) = s.backend else {
        panic!("expected onnx, got {:?}", s.backend)
    };
    assert_eq!(m.model, Path::new("m/model.onnx"));
    assert_eq!(m.tokenizer, Path::new("m/tokenizer.json"));
    assert_eq!((m.max_tokens, m.threads, m.runtime_library), (256, 0, None));
}

#[test]
fn request_caps_default_safely_and_reach_the_engine_as_flags() {
    let s = load_engine_str(
        "[engine]\nbackend = \"onnx\"\nmodel = \"m/model.onnx\"\nmax_tokens = 512\n",
        "replica.toml",
    )
    .unwrap();
    assert_eq!(s.max_inputs, 256);
    let EngineBackend::Onnx(m) = &s.backend else {
        panic!("expected onnx, got {:?}", s.backend)
    };
    assert_eq!(m.max_request_tokens, 65_536);
    assert_eq!(m.request_tokens_problem(), None);
    let args: Vec<String> = s
        .to_args()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    for (flag, value) in [("--max-inputs", "256"), ("--max-request-tokens", "65536")] {
        let at = args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(args[at + 1], value, "{flag}");
    }

    // A synthetic replica counts inputs too, but has no tokens.
    let synthetic = load_engine_str("[engine]\nbackend = \"synthetic\"\n", "replica.toml").unwrap();
    let args = synthetic.to_args();
    assert!(args.iter().any(|a| a == "--max-inputs"));
    assert!(!args.iter().any(|a| a == "--max-request-tokens"));
}

#[test]
fn a_request_token_cap_below_one_input_is_named() {
    let EngineBackend::Onnx(mut m) = load_engine_str(
        "[engine]\nbackend = \"onnx\"\nmodel = \"m/model.onnx\"\n",
        "replica.toml",
    )
    .unwrap()
    .backend
    else {
        panic!("expected onnx")
    };
    m.max_request_tokens = 100;
    assert_eq!(
        m.request_tokens_problem().as_deref(),
        Some(
            "`max_request_tokens` (100) is below `max_tokens` (256): one input of the longest allowed length would be refused"
        )
    );
}

#[test]
fn relative_paths_in_a_replica_file_are_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replica.toml");
    std::fs::write(
        &file,
        "[engine]\nbackend = \"onnx\"\nmodel = \"model.onnx\"\nonnxruntime = \"/opt/ort/libonnxruntime.so\"\n",
    )
    .unwrap();
    let EngineBackend::Onnx(m) = load_engine_file(&file).unwrap().backend else {
        panic!("expected onnx")
    };
    assert_eq!(m.model, dir.path().join("model.onnx"));
    assert_eq!(m.tokenizer, dir.path().join("tokenizer.json"));
    assert_eq!(
        m.runtime_library,
        Some(PathBuf::from("/opt/ort/libonnxruntime.so"))
    );
}

#[test]
fn a_synthetic_profile_is_read_in_milliseconds() {
    let s = load_engine_str(
        "[engine]\nbackend = \"synthetic\"\nfixed_ms = 5\nper_item_ms = 1\njitter_ms = 3\nload_delay_ms = 200\n",
        "replica.toml",
    )
    .unwrap();
    assert_eq!(
        s.backend,
        EngineBackend::Synthetic(SyntheticSettings {
            fixed: Duration::from_millis(5),
            per_item: Duration::from_millis(1),
            jitter: Duration::from_millis(3),
            load_delay: Duration::from_millis(200),
            error_percent: 0,
        })
    );
}

#[test]
fn every_mistake_is_reported_with_its_line() {
    let errors = messages(
        "[engine]\nbackend = \"onnx\"\nfixed_ms = 5\nmax_batch_size = 0\ncolour = \"blue\"\n",
    );
    assert_eq!(
        errors,
        [
            "1: engine.model: missing required key `model`",
            "3: engine.fixed_ms: `fixed_ms` does not apply to backend = \"onnx\"",
            "4: engine.max_batch_size: `max_batch_size` is 0; it must be between 1 and 4096",
            "5: engine.colour: unknown key `colour`",
        ]
    );
}

#[test]
fn batches_larger_than_the_concurrency_could_never_fill() {
    assert_eq!(
        messages("[engine]\nbackend = \"synthetic\"\nmax_batch_size = 8\n"),
        [
            "3: engine.max_batch_size: `max_batch_size` (8) exceeds `predict_concurrency` (1): requests wait for a running slot before they can join a batch, so batches could never fill"
        ]
    );
}

#[test]
fn an_unknown_backend_and_a_missing_table_are_named() {
    assert_eq!(
        messages("[engine]\nbackend = \"pytorch\"\n"),
        [
            "2: engine.backend: unknown backend `pytorch`: use \"onnx\", \"tensorrt\" or \"synthetic\""
        ]
    );
    assert_eq!(
        messages("[server]\nthreads = 1\n"),
        [
            "1: (root): missing the [engine] table",
            "1: server: unknown key `server`: a replica's file has only an [engine] table",
        ]
    );
}

#[test]
fn a_deployment_engine_takes_the_deployment_concurrency() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
predict_concurrency = 4
replicas = { source = "static", addresses = [] }
engine = { backend = "synthetic", fixed_ms = 5 }
"#;
    let config = load_str(text, "gateway.toml").unwrap();
    let engine = config.models[0].deployments[0].engine.clone().unwrap();
    assert_eq!(engine.predict_concurrency, 4);
    assert_eq!(engine.backend.name(), "synthetic");

    let doubled = text.replace("fixed_ms = 5", "fixed_ms = 5, predict_concurrency = 2");
    let errors = load_str(&doubled, "gateway.toml").unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(
        errors.errors[0].message,
        "set `predict_concurrency` on the deployment, not in its engine table"
    );
    assert_eq!(errors.errors[0].location.unwrap().line, 8);
}

#[test]
fn the_annotated_replica_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/replica.toml");
    let s = load_engine_file(&path).unwrap();
    assert_eq!((s.predict_concurrency, s.max_batch_size), (8, 8));
    let EngineBackend::Onnx(m) = s.backend else {
        panic!("expected onnx")
    };
    assert!(m.model.ends_with("models/all-minilm-l6-v2-int8/model.onnx"));
}
