//! TOML text to raw sections. Each section is deserialized on its own, so a
//! type error in one deployment does not hide the errors in the next, and
//! unknown keys are collected (not fail-fast) with `serde_ignored`.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::Problem;
use crate::path::ConfigPath;
use crate::raw::{RawConfig, RawEngineFile, RawModel};

pub(crate) struct Parsed<'i, R> {
    pub(crate) root: Option<Spanned<DeTable<'i>>>,
    pub(crate) raw: Option<R>,
    pub(crate) errors: Vec<Problem>,
}

/// The gateway's config file.
pub(crate) fn parse(text: &str) -> Parsed<'_, RawConfig> {
    parse_with(
        text,
        |key, value, path, raw: &mut RawConfig, errors| match key {
            "listeners" => raw.listeners = section(value, path, errors),
            "server" => raw.server = section(value, path, errors),
            "api_keys" => raw.api_keys = each(value, path, errors, section),
            "models" => raw.models = each(value, path, errors, parse_model),
            "node" => raw.node = section(value, path, errors),
            "admin" => raw.admin = section(value, path, errors),
            "fleet" => raw.fleet = section(value, path, errors),
            other => errors.push(Problem::at(path.clone(), format!("unknown key `{other}`"))),
        },
    )
}

/// A replica's own settings file.
pub(crate) fn parse_engine_file(text: &str) -> Parsed<'_, RawEngineFile> {
    parse_with(
        text,
        |key, value, path, raw: &mut RawEngineFile, errors| match key {
            "engine" => raw.engine = section(value, path, errors),
            other => errors.push(Problem::at(
                path.clone(),
                format!("unknown key `{other}`: a replica's file has only an [engine] table"),
            )),
        },
    )
}

/// Parses the TOML and hands each top-level key to `top_level`.
fn parse_with<R: Default>(
    text: &str,
    mut top_level: impl FnMut(&str, &Spanned<DeValue<'_>>, &ConfigPath, &mut R, &mut Vec<Problem>),
) -> Parsed<'_, R> {
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let problem = Problem {
                path: ConfigPath::root(),
                span: e.span(),
                message: format!("invalid TOML: {}", e.message().trim_end()),
            };
            return Parsed {
                root: None,
                raw: None,
                errors: vec![problem],
            };
        }
    };
    let mut errors = Vec::new();
    let mut raw = R::default();
    let top = ConfigPath::root();
    for (key, value) in root.get_ref().iter() {
        let path = top.key(key.get_ref());
        top_level(key.get_ref(), value, &path, &mut raw, &mut errors);
    }
    Parsed {
        root: Some(root),
        raw: Some(raw),
        errors,
    }
}

fn parse_model(
    value: &Spanned<DeValue<'_>>,
    path: &ConfigPath,
    errors: &mut Vec<Problem>,
) -> RawModel {
    let mut model = RawModel {
        header: None,
        deployments: Vec::new(),
        environments: Vec::new(),
    };
    let Some(table) = value.get_ref().as_table() else {
        errors.push(not_a(path, "table", value));
        return model;
    };
    let mut header = DeTable::new();
    for (key, value) in table.iter() {
        let key_path = path.key(key.get_ref());
        match key.get_ref().as_ref() {
            "deployments" => {
                model.deployments = each(value, &key_path, errors, section);
            }
            "environments" => {
                model.environments = each(value, &key_path, errors, section);
            }
            _ => {
                header.insert(key.clone(), value.clone());
            }
        }
    }
    let header = Spanned::new(value.span(), DeValue::Table(header));
    model.header = section(&header, path, errors);
    model
}

/// Applies `parse_one` to every element of an array (an `[[array.of.tables]]`).
fn each<T>(
    value: &Spanned<DeValue<'_>>,
    path: &ConfigPath,
    errors: &mut Vec<Problem>,
    mut parse_one: impl FnMut(&Spanned<DeValue<'_>>, &ConfigPath, &mut Vec<Problem>) -> T,
) -> Vec<T> {
    let Some(array) = value.get_ref().as_array() else {
        errors.push(not_a(path, "array of tables", value));
        return Vec::new();
    };
    array
        .iter()
        .enumerate()
        .map(|(i, v)| parse_one(v, &path.index(i), errors))
        .collect()
}

/// Deserializes one section, recording a type error or every unknown key.
fn section<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    path: &ConfigPath,
    errors: &mut Vec<Problem>,
) -> Option<T> {
    if value.get_ref().as_table().is_none() {
        errors.push(not_a(path, "table", value));
        return None;
    }
    let mut unknown = Vec::new();
    let deserializer = ValueDeserializer::from(value.clone());
    let result = serde_ignored::deserialize(deserializer, |ignored| {
        unknown.push(to_config_path(path, &ignored));
    });
    match result {
        Ok(parsed) => {
            for key_path in unknown {
                let name = match key_path.segments().last() {
                    Some(crate::path::Segment::Key(k)) => k.clone(),
                    _ => key_path.to_string(),
                };
                errors.push(Problem::at(key_path, format!("unknown key `{name}`")));
            }
            Some(parsed)
        }
        Err(e) => {
            errors.push(Problem {
                path: path.clone(),
                span: e.span(),
                message: e.message().trim_end().to_owned(),
            });
            None
        }
    }
}

fn to_config_path(base: &ConfigPath, ignored: &serde_ignored::Path<'_>) -> ConfigPath {
    use serde_ignored::Path as P;
    match ignored {
        P::Root => base.clone(),
        P::Seq { parent, index } => to_config_path(base, parent).index(*index),
        P::Map { parent, key } => to_config_path(base, parent).key(key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            to_config_path(base, parent)
        }
    }
}

fn not_a(path: &ConfigPath, expected: &str, value: &Spanned<DeValue<'_>>) -> Problem {
    Problem {
        path: path.clone(),
        span: Some(value.span()),
        message: format!("expected {expected}, found {}", value.get_ref().type_str()),
    }
}
