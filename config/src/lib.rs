//! The inference gateway's configuration: TOML schema, defaults and validation.
//!
//! Loading is two steps, as in vector: `parse` turns TOML text into raw serde
//! sections, collecting every syntax, type and unknown-key error; `validate`
//! checks the cross-references and ranges and produces the typed [`Config`].
//! Every error carries the file, line, column and dotted path it is about.
//!
//! ```
//! let text = r#"
//! [[models]]
//! id = "abc123"
//! name = "embedder"
//! "#;
//! let config = config::load_str(text, "inline.toml").unwrap();
//! assert_eq!(config.models[0].environments[0].name, "production");
//! ```
//!
//! `examples/gateway.toml` at the repository root documents every field.
//! [`edit`] changes a config document for the management API, keeping the
//! operator's comments and layout.
//! No tokio and no network here: this crate reads, writes and watches files.

pub mod edit;
mod engine;
mod error;
mod files;
mod keys;
mod model;
mod parse;
mod path;
mod raw;
mod ready;
mod resources;
mod validate;
pub mod watch;

pub use edit::{ConfigDocument, EditError};
pub use engine::{EngineBackend, EngineSettings, SyntheticSettings, TextModelSettings};
pub use error::{ConfigError, ConfigErrors, Location};
pub use files::check_files;
pub use keys::{GeneratedKey, KEY_PREFIX, generate_key, key_digest};
pub use model::*;
pub use path::{ConfigPath, Segment};
pub use ready::{GatewayReady, ReadyLine, ReadyLineError};
pub use resources::Resources;

use std::path::Path;

/// Reads, parses and validates the config file at `path`. Relative paths
/// in it (deployments' `engine` tables, `[node] engine`) are made relative
/// to the file's directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::io(path, &e))?;
    let mut config = load_str(&text, &path.display().to_string())?;
    if let Some(dir) = path.parent() {
        config.resolve_paths(dir);
    }
    Ok(config)
}

/// [`load_file`], then [`check_files`]: also refuses a config whose local
/// replicas would load a file that does not exist (a model, tokenizer or
/// ONNX Runtime library), with the same located errors. What `gateway
/// check` and every reload use; [`load_file`] and [`load_str`] never look
/// at those files.
pub fn load_file_checked(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::io(path, &e))?;
    let origin = path.display().to_string();
    let mut config = load_str(&text, &origin)?;
    let base = path.parent().unwrap_or(Path::new(""));
    check_files(&config, base, &text, &origin)?;
    config.resolve_paths(base);
    Ok(config)
}

/// Parses and validates config text; `origin` names the file in errors.
/// Paths are left as written.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    finish(parse::parse(text), validate::validate, text, origin)
}

/// Parses and validates a fleet's shared document (the keys, models,
/// deployments and environments every gateway of a [`Fleet`] serves):
/// a config without the sections that belong to each node's own file
/// (`[listeners]`, `[server]`, `[node]`, `[fleet]`), which are refused.
/// `origin` names the document in errors (its etcd key, or the file being
/// pushed). Paths are left as written; join it to a node's own config
/// with [`Config::joined`].
pub fn load_shared_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    finish(parse::parse(text), validate::validate_shared, text, origin)
}

/// [`load_shared_str`], then [`check_files`] against `base` (the node
/// file's directory, which relative paths are taken from), then joined to
/// the node's own config and paths resolved: what a fleet node serves.
pub fn load_shared_checked(
    text: &str,
    origin: &str,
    node: &Config,
    base: &Path,
) -> Result<Config, ConfigErrors> {
    let mut shared = load_shared_str(text, origin)?;
    check_files(&shared, base, text, origin)?;
    shared.resolve_paths(base);
    Ok(Config::joined(node, shared))
}

/// Reads a replica's own settings file (one `[engine]` table); relative
/// paths in it are made relative to the file's directory.
pub fn load_engine_file(path: &Path) -> Result<EngineSettings, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::io(path, &e))?;
    let mut settings = load_engine_str(&text, &path.display().to_string())?;
    if let Some(dir) = path.parent() {
        settings.resolve_paths(dir);
    }
    Ok(settings)
}

/// Parses and validates a replica's settings text (paths left as written).
pub fn load_engine_str(text: &str, origin: &str) -> Result<EngineSettings, ConfigErrors> {
    finish(
        parse::parse_engine_file(text),
        validate::validate_engine_file,
        text,
        origin,
    )
}

/// Validates what parsed and locates every problem in the text.
fn finish<R, T>(
    parsed: parse::Parsed<'_, R>,
    validate: impl FnOnce(R, &mut Vec<error::Problem>) -> Option<T>,
    text: &str,
    origin: &str,
) -> Result<T, ConfigErrors> {
    let mut errors = parsed.errors;
    let value = parsed.raw.and_then(|raw| validate(raw, &mut errors));
    if errors.is_empty()
        && let Some(value) = value
    {
        return Ok(value);
    }
    Err(ConfigErrors::locate(
        origin,
        text,
        parsed.root.as_ref(),
        errors,
    ))
}

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
