//! The files a local replica loads (model, tokenizer, ONNX Runtime library)
//! must exist: `load_file_checked` / `check_files` report each missing one
//! with the file, line, column and path, like a validation error.

use std::path::{Path, PathBuf};

use config::edit::ConfigDocument;
use config::{EngineBackend, check_files, load_file, load_file_checked, load_str};

/// A config directory with `gateway.toml` holding `text`, and the files
/// named in `files` (relative to the directory) created empty.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(text: &str, files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gateway.toml"), text).unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `load_file_checked`'s errors, one line each, with the directory
    /// written as `DIR`.
    fn errors(&self) -> Vec<String> {
        let errors = load_file_checked(&self.config()).unwrap_err().to_string();
        let dir = self.dir.path().display().to_string();
        errors.lines().map(|l| l.replace(&dir, "DIR")).collect()
    }
}

/// One model whose single deployment has `deployment` as its body.
fn one_deployment(deployment: &str) -> String {
    format!("[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"a\"\n{deployment}")
}

const ONNX: &str = "[models.deployments.engine]\nbackend = \"onnx\"\n";

#[test]
fn a_missing_model_is_located_at_its_key_and_named_by_its_resolved_path() {
    let text = one_deployment(&format!("{ONNX}model = \"nope/model.onnx\"\n"));
    let dir = Dir::new(&text, &[]);
    assert_eq!(
        dir.errors(),
        [
            "DIR/gateway.toml:5:21: models[0].deployments[0].engine.tokenizer: tokenizer file (by default `tokenizer.json` beside the model) DIR/nope/tokenizer.json does not exist",
            "DIR/gateway.toml:7:1: models[0].deployments[0].engine.model: model file DIR/nope/model.onnx does not exist",
        ]
    );
    // The default tokenizer is not written: it is located at the engine
    // table. Plain loading never looks at the disk.
    load_file(&dir.config()).unwrap();
    load_str(&text, "t.toml").unwrap();
}

#[test]
fn a_missing_tokenizer_is_reported_where_it_is_set() {
    let text = one_deployment(&format!(
        "{ONNX}model = \"e5/model.onnx\"\ntokenizer = \"e5/tok.json\"\n"
    ));
    let dir = Dir::new(&text, &["e5/model.onnx", "e5/tokenizer.json"]);
    assert_eq!(
        dir.errors(),
        [
            "DIR/gateway.toml:8:1: models[0].deployments[0].engine.tokenizer: tokenizer file DIR/e5/tok.json does not exist"
        ]
    );
}

#[test]
fn a_missing_runtime_library_is_reported_absolute_paths_as_written() {
    let text = one_deployment(&format!(
        "{ONNX}model = \"e5/model.onnx\"\nonnxruntime = \"/nonexistent/igw/libonnxruntime.so\"\n"
    ));
    let dir = Dir::new(&text, &["e5/model.onnx", "e5/tokenizer.json"]);
    assert_eq!(
        dir.errors(),
        [
            "DIR/gateway.toml:8:1: models[0].deployments[0].engine.onnxruntime: ONNX Runtime library /nonexistent/igw/libonnxruntime.so does not exist"
        ]
    );
}

#[test]
fn existing_files_pass_and_the_paths_come_back_resolved() {
    let text = one_deployment(&format!(
        "{ONNX}model = \"e5/model.onnx\"\nonnxruntime = \"ort/libonnxruntime.so\"\n"
    ));
    let dir = Dir::new(
        &text,
        &[
            "e5/model.onnx",
            "e5/tokenizer.json",
            "ort/libonnxruntime.so",
        ],
    );
    let config = load_file_checked(&dir.config()).unwrap();
    assert_eq!(config, load_file(&dir.config()).unwrap());
    let engine = config.models[0].deployments[0].engine.as_ref().unwrap();
    let EngineBackend::Onnx(m) = &engine.backend else {
        panic!("{engine:?}")
    };
    assert_eq!(m.model, dir.path("e5/model.onnx"));
    assert_eq!(m.tokenizer, dir.path("e5/tokenizer.json"));
    assert_eq!(m.runtime_library, Some(dir.path("ort/libonnxruntime.so")));
}

#[test]
fn static_and_synthetic_deployments_are_not_checked() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "fixed"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
engine = { backend = "onnx", model = "nope/model.onnx" }
[[models.deployments]]
id = "synthetic"
engine = { backend = "synthetic", fixed_ms = 1 }
"#;
    let dir = Dir::new(text, &[]);
    load_file_checked(&dir.config()).unwrap();
}

#[test]
fn tensorrt_engines_and_inactive_deployments_are_checked_too() {
    let text = one_deployment(
        "active = false\nengine = { backend = \"tensorrt\", model = \"e5/model.plan\" }\n",
    );
    let dir = Dir::new(&text, &["e5/tokenizer.json"]);
    assert_eq!(
        dir.errors(),
        [
            "DIR/gateway.toml:6:34: models[0].deployments[0].engine.model: model file DIR/e5/model.plan does not exist"
        ]
    );
}

#[test]
fn a_directory_is_not_a_model_file() {
    let text = one_deployment(&format!("{ONNX}model = \"e5\"\ntokenizer = \"t.json\"\n"));
    let dir = Dir::new(&text, &["e5/x", "t.json"]);
    assert_eq!(
        dir.errors(),
        [
            "DIR/gateway.toml:7:1: models[0].deployments[0].engine.model: model file DIR/e5 is a directory, not a file"
        ]
    );
}

#[test]
fn every_missing_file_of_every_deployment_is_reported_in_document_order() {
    let text = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
engine = { backend = "onnx", model = "a.onnx", tokenizer = "t.json" }
[[models.deployments]]
id = "b"
engine = { backend = "onnx", model = "t.json", tokenizer = "b.json" }
[[models]]
id = "n"
[[models.deployments]]
id = "c"
engine = { backend = "onnx", model = "c.onnx", tokenizer = "t.json" }
"#;
    let dir = Dir::new(text, &["t.json"]);
    let errors = dir.errors();
    let located: Vec<&str> = errors
        .iter()
        .map(|e| e.split(" file ").next().unwrap())
        .collect();
    assert_eq!(
        located,
        [
            "DIR/gateway.toml:6:30: models[0].deployments[0].engine.model: model",
            "DIR/gateway.toml:9:48: models[0].deployments[1].engine.tokenizer: tokenizer",
            "DIR/gateway.toml:14:30: models[1].deployments[0].engine.model: model",
        ]
    );
}

#[test]
fn check_files_takes_the_config_as_written_and_the_base_directory() {
    let text = one_deployment(&format!("{ONNX}model = \"e5/model.onnx\"\n"));
    let dir = Dir::new(&text, &["e5/model.onnx", "e5/tokenizer.json"]);
    let config = load_str(&text, "gateway.toml").unwrap();
    check_files(&config, dir.dir.path(), &text, "gateway.toml").unwrap();
    let errors = check_files(
        &config,
        Path::new("/nonexistent/igw"),
        &text,
        "gateway.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        errors.lines().collect::<Vec<_>>(),
        [
            // Not written: located at the engine table.
            "gateway.toml:5:21: models[0].deployments[0].engine.tokenizer: tokenizer file (by default `tokenizer.json` beside the model) /nonexistent/igw/e5/tokenizer.json does not exist",
            "gateway.toml:7:1: models[0].deployments[0].engine.model: model file /nonexistent/igw/e5/model.onnx does not exist",
        ]
    );

    // The management API's documents: the same check, the same errors.
    let doc = ConfigDocument::parse(&text, "gateway.toml").unwrap();
    doc.check_files(dir.dir.path()).unwrap();
    assert_eq!(
        doc.check_files(Path::new("/nonexistent/igw"))
            .unwrap_err()
            .to_string(),
        errors
    );
}

#[test]
fn an_unreadable_config_file_is_reported_as_by_load_file() {
    let errors = load_file_checked(Path::new("/nonexistent/igw/gateway.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        errors.starts_with("/nonexistent/igw/gateway.toml: (file): cannot read"),
        "{errors}"
    );
}
