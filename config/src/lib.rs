//! The inference gateway's configuration: TOML schema, defaults and validation.
//!
//! Loading is two steps, as in vector: [`parse`] turns TOML text into raw serde
//! sections, collecting every syntax, type and unknown-key error; [`validate`]
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
//! No tokio and no network here: this crate reads and writes text only.

mod error;
mod keys;
mod model;
mod parse;
mod path;
mod raw;
mod resources;
mod validate;

pub use error::{ConfigError, ConfigErrors, Location};
pub use keys::{GeneratedKey, KEY_PREFIX, generate_key, key_digest};
pub use model::*;
pub use path::{ConfigPath, Segment};
pub use resources::Resources;

use std::path::Path;

/// Reads, parses and validates the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::io(path, &e))?;
    load_str(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names the file in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let parsed = parse::parse(text);
    let mut errors = parsed.errors;
    let config = match parsed.raw {
        Some(raw) => validate::validate(raw, &mut errors),
        None => None,
    };
    if errors.is_empty()
        && let Some(config) = config
    {
        return Ok(config);
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
