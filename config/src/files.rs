//! The files local replicas load: each must exist before a replica is
//! started from it. A typo in a model path otherwise passes validation and
//! shows up only as replicas that crash at every start.
//!
//! This is a step of its own, after validation ([`crate::load_str`] never
//! looks at the disk): `gateway check`, the reloader and the management
//! API's edits run it, through [`crate::load_file_checked`],
//! [`check_files`] and [`ConfigDocument::check_files`](crate::ConfigDocument::check_files).

use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::engine::{EngineBackend, EngineSettings};
use crate::error::{ConfigErrors, Problem};
use crate::model::{Config, ReplicaSource};
use crate::path::ConfigPath;

/// Checks that every file a local replica of `config` would load exists
/// and is a readable file: the `model`, the `tokenizer` (by default
/// `tokenizer.json` beside the model) and the `onnxruntime` library, of
/// each deployment whose replicas are local (`replicas = { source =
/// "local" }`, the default) and whose backend reads files (`onnx`,
/// `tensorrt`). Static deployments and synthetic engines are not checked;
/// inactive deployments are (activating one starts replicas).
///
/// `config` is what [`load_str`](crate::load_str) returned for `text`,
/// paths as written; relative paths are taken relative to `base`, the
/// config file's directory, as [`load_file`](crate::load_file) resolves
/// them for the provisioner. Errors are located in `text` like validation
/// errors, `origin` naming the file:
///
/// ```text
/// gateway.toml:42:1: models[0].deployments[0].engine.model: model file /srv/models/e5/modle.onnx does not exist
/// ```
pub fn check_files(
    config: &Config,
    base: &Path,
    text: &str,
    origin: &str,
) -> Result<(), ConfigErrors> {
    let problems = problems(config, base);
    if problems.is_empty() {
        return Ok(());
    }
    Err(locate(origin, text, problems))
}

/// Each missing or unreadable file as a problem at the key that names it.
pub(crate) fn problems(config: &Config, base: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let models = ConfigPath::root().key("models");
    for (i, model) in config.models.iter().enumerate() {
        let deployments = models.index(i).key("deployments");
        for (j, deployment) in model.deployments.iter().enumerate() {
            if deployment.replicas != ReplicaSource::Local {
                continue;
            }
            if let Some(engine) = &deployment.engine {
                let path = deployments.index(j).key("engine");
                engine_problems(engine, base, &path, &mut problems);
            }
        }
    }
    problems
}

/// Locates `problems` in `text` (parsed again: this is the error path).
pub(crate) fn locate(origin: &str, text: &str, problems: Vec<Problem>) -> ConfigErrors {
    let root = DeTable::parse(text).ok();
    ConfigErrors::locate(origin, text, root.as_ref(), problems)
}

fn engine_problems(
    engine: &EngineSettings,
    base: &Path,
    path: &ConfigPath,
    problems: &mut Vec<Problem>,
) {
    let (EngineBackend::Onnx(m) | EngineBackend::TensorRt(m)) = &engine.backend else {
        return;
    };
    let default_tokenizer = m.tokenizer == m.model.with_file_name("tokenizer.json");
    let tokenizer = if default_tokenizer {
        "tokenizer file (by default `tokenizer.json` beside the model)"
    } else {
        "tokenizer file"
    };
    let files = [
        ("model", "model file", Some(&m.model)),
        ("tokenizer", tokenizer, Some(&m.tokenizer)),
        (
            "onnxruntime",
            "ONNX Runtime library",
            m.runtime_library.as_ref(),
        ),
    ];
    for (key, what, file) in files {
        let Some(file) = file else { continue };
        let resolved = resolve(base, file);
        if let Some(wrong) = file_problem(&resolved) {
            problems.push(Problem::at(
                path.key(key),
                format!("{what} {} {wrong}", shown(&resolved).display()),
            ));
        }
    }
}

/// `file` as the provisioner passes it to a replica: relative to `base`.
fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_relative() {
        base.join(file)
    } else {
        file.to_owned()
    }
}

/// The path as an operator can find it: absolute, when the working
/// directory is known.
fn shown(file: &Path) -> PathBuf {
    std::path::absolute(file).unwrap_or_else(|_| file.to_owned())
}

/// What is wrong with `file`, if anything: missing, not a regular file, or
/// not readable by this process (whose replicas run as the same user).
fn file_problem(file: &Path) -> Option<String> {
    // `metadata` first: opening a FIFO named by mistake could block.
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("does not exist".to_owned());
        }
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if meta.is_dir() {
        return Some("is a directory, not a file".to_owned());
    }
    if !meta.is_file() {
        return Some("is not a regular file".to_owned());
    }
    match std::fs::File::open(file) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}
