//! Config errors that name the file, line, column, path and what is wrong.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::path::{ConfigPath, Segment};

/// One problem found in a config document, before it is located.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) path: ConfigPath,
    /// A precise byte span when the parser knows one; otherwise the path is
    /// looked up in the document.
    pub(crate) span: Option<Range<usize>>,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn at(path: ConfigPath, message: impl Into<String>) -> Self {
        Self {
            path,
            span: None,
            message: message.into(),
        }
    }
}

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// One located config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending value, e.g. `models[0].deployments[1].id`.
    pub path: String,
    /// Where it is in the file, when the file could be read.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
}

/// Every error found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// All errors, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match e.location {
                Some(loc) => write!(f, "{}:{}:{}: ", self.origin, loc.line, loc.column)?,
                None => write!(f, "{}: ", self.origin)?,
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub(crate) fn io(path: &Path, error: &std::io::Error) -> Self {
        Self {
            origin: path.display().to_string(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                location: None,
                message: format!("cannot read: {error}"),
            }],
        }
    }

    /// Resolves each problem's span (given, or found by its path in the
    /// document) to a line and column, and sorts them in document order.
    pub(crate) fn locate(
        origin: &str,
        text: &str,
        root: Option<&Spanned<DeTable<'_>>>,
        problems: Vec<Problem>,
    ) -> Self {
        let lines = LineIndex::new(text);
        let mut located: Vec<(usize, ConfigError)> = problems
            .into_iter()
            .map(|p| {
                let offset = p
                    .span
                    .map(|s| s.start)
                    .or_else(|| root.map(|r| span_of(r, &p.path).start));
                let error = ConfigError {
                    path: p.path.to_string(),
                    location: offset.map(|o| lines.locate(text, o)),
                    message: p.message,
                };
                (offset.unwrap_or(0), error)
            })
            .collect();
        located.sort_by_key(|(offset, _)| *offset);
        Self {
            origin: origin.to_owned(),
            errors: located.into_iter().map(|(_, e)| e).collect(),
        }
    }
}

/// The span of the deepest value along `path` that exists in the document:
/// the value itself, or its nearest ancestor when it is missing.
fn span_of(root: &Spanned<DeTable<'_>>, path: &ConfigPath) -> Range<usize> {
    let mut span = root.span();
    let mut table = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for segment in path.segments() {
        let next = match (segment, table, value) {
            (Segment::Key(key), Some(t), _) => t.get_key_value(key.as_str()).map(|(k, v)| {
                // Point at the key: that is where a reader looks first.
                span = k.span();
                v
            }),
            (Segment::Index(i), _, Some(v)) => v.get_ref().as_array().and_then(|a| a.get(*i)),
            _ => None,
        };
        let Some(next) = next else { break };
        if matches!(segment, Segment::Index(_)) {
            span = next.span();
        }
        table = next.get_ref().as_table();
        value = Some(next);
    }
    span
}

/// Byte offset to 1-based line and column.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn locate(&self, text: &str, offset: usize) -> Location {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            line: line + 1,
            column,
        }
    }
}
