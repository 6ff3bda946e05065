//! The config file as the management API's one source of truth. Every API
//! mutation is a read-modify-write of the file the operator edits by hand:
//! read it, check the caller's revision, apply the edit to the TOML document
//! (comments and layout kept), validate (the files a local replica would
//! load included, as a reload does), write it atomically (temp file,
//! fsync, atomic exchange, fsync of the directory), then apply it through the same
//! reload path as a hand edit before answering.
//!
//! The revision is a digest of the file's bytes, so hand edits change it as
//! API edits do: a client holding a stale revision (`If-Match`) gets
//! [`StoreError::Stale`], never a silent overwrite. A hand edit that lands
//! while an API edit is being written is detected ([`replace_if_unchanged`])
//! and the edit is redone on top of it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::ConfigErrors;
use config::edit::{ConfigDocument, EditError};
use sha2::{Digest, Sha256};

use crate::reload::{ReloadOutcome, Reloader};

/// How many times an edit is redone when hand edits keep racing it. Each
/// try is a parse and two validations; 5 was too few for a file rewritten
/// every few milliseconds on a loaded 2-core machine (seen in CI).
const ATTEMPTS: usize = 20;

/// A version of the config file: the first 16 bytes of its SHA-256, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(String);

impl Revision {
    fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(&Sha256::digest(bytes)[..16]))
    }

    /// As an HTTP entity tag (quoted).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Whether an `If-Match` header value names this revision (`*` matches
    /// any; weak tags compare by their value).
    pub fn matches(&self, if_match: &str) -> bool {
        if_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == self.0)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a read or an edit of the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The caller's revision is not the file's (412).
    #[error("the config changed since revision {given}; it is now {current}: read it again")]
    Stale {
        /// What the caller sent.
        given: String,
        /// The file's revision now.
        current: Revision,
    },
    /// The file on disk is invalid (a broken hand edit): no API edit is
    /// applied on top of it until it is fixed (409).
    #[error("the config file is invalid; fix it first:\n{0}")]
    FileInvalid(ConfigErrors),
    /// The edit itself was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// Hand edits kept changing the file while the edit was being written.
    #[error("the config file kept changing; try again")]
    Busy,
}

/// Reads and edits one config file, and applies what it writes.
#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
    reloader: Arc<Reloader>,
    writing: std::sync::Mutex<()>,
}

impl ConfigStore {
    /// A store for the file `reloader` watches.
    pub fn new(path: &Path, reloader: Arc<Reloader>) -> Self {
        Self {
            path: path.to_owned(),
            reloader,
            writing: std::sync::Mutex::new(()),
        }
    }

    /// The reload path the store applies its edits through (and its counts).
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// The file's revision and, if it is invalid, why: the errors a reload
    /// of it reports, a local replica's missing files included. Blocks
    /// (file I/O).
    pub fn status(&self) -> Result<(Revision, Option<ConfigErrors>), StoreError> {
        let bytes = self.read_bytes()?;
        let errors = match self.parse(&bytes) {
            Err(StoreError::FileInvalid(errors)) => Some(errors),
            Ok(doc) => doc.check_files(self.base()).err(),
            Err(_) => None,
        };
        Ok((Revision::of(&bytes), errors))
    }

    /// The file, parsed, and its revision. Blocks (file I/O).
    pub fn read(&self) -> Result<(ConfigDocument, Revision), StoreError> {
        let bytes = self.read_bytes()?;
        let revision = Revision::of(&bytes);
        Ok((self.parse(&bytes)?, revision))
    }

    /// Applies `edit` to the file if `if_match` (when given) names its
    /// current revision, writes it, and applies it to routing before
    /// returning the edit's result and the new revision. An edit that
    /// changes nothing writes nothing. Blocks (file I/O).
    pub fn edit<T>(
        &self,
        if_match: Option<&str>,
        mut edit: impl FnMut(&mut ConfigDocument) -> Result<T, EditError>,
    ) -> Result<(T, Revision), StoreError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for _ in 0..ATTEMPTS {
            let before = self.read_bytes()?;
            let revision = Revision::of(&before);
            if let Some(given) = if_match
                && !revision.matches(given)
            {
                return Err(StoreError::Stale {
                    given: given.to_owned(),
                    current: revision,
                });
            }
            let mut doc = self.parse(&before)?;
            let result = edit(&mut doc)?;
            let after = doc.text();
            if after.as_bytes() == before.as_slice() {
                return Ok((result, revision));
            }
            // What the reloader would refuse is refused here, before
            // anything is written: a local replica's file that is missing.
            self.check_files(&before, &doc)?;
            match self.replace_if_unchanged(&before, after.as_bytes())? {
                true => {
                    self.apply();
                    return Ok((result, Revision::of(after.as_bytes())));
                }
                // A hand edit landed meanwhile: redo the edit on top of it.
                false => continue,
            }
        }
        Err(StoreError::Busy)
    }

    fn read_bytes(&self) -> Result<Vec<u8>, StoreError> {
        std::fs::read(&self.path).map_err(|source| self.io(source))
    }

    fn parse(&self, bytes: &[u8]) -> Result<ConfigDocument, StoreError> {
        let text = String::from_utf8_lossy(bytes);
        ConfigDocument::parse(&text, &self.path.display().to_string())
            .map_err(StoreError::FileInvalid)
    }

    /// The directory relative file paths in the config are taken from.
    fn base(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }

    /// Refuses an edited document naming a file that a local replica would
    /// load and that does not exist: an invalid edit (400) when the edit
    /// brought the problem, [`StoreError::FileInvalid`] (409) when the file
    /// as it is (`before`) already has one, as for any broken hand edit.
    fn check_files(&self, before: &[u8], edited: &ConfigDocument) -> Result<(), StoreError> {
        let Err(errors) = edited.check_files(self.base()) else {
            return Ok(());
        };
        match self.parse(before)?.check_files(self.base()) {
            Err(already) => Err(StoreError::FileInvalid(already)),
            Ok(()) => Err(StoreError::Edit(EditError::Invalid(errors))),
        }
    }

    fn replace_if_unchanged(&self, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        replace_if_unchanged(&self.path, old, new).map_err(|source| self.io(source))
    }

    /// Applies the file now, so routing has changed when the API answers;
    /// the watcher then finds nothing left to do.
    fn apply(&self) {
        match self.reloader.reload() {
            ReloadOutcome::Applied { revision } => {
                log::info!(
                    "config {}: applied API edit as revision {revision}",
                    self.path.display()
                );
            }
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Rejected(errors) => {
                // Cannot happen for a validated edit unless a broken hand
                // edit replaced it in between; the watcher reports that.
                log::error!("config rejected after an API edit:\n{errors}");
            }
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Replaces the file at `path` with `new`, atomically and durably, if it
/// still holds `old`; `Ok(false)` (file untouched) if someone changed it.
///
/// `new` is written to a temp file beside it and *exchanged* with the file
/// (Linux `renameat2(RENAME_EXCHANGE)`), so the bytes that were replaced
/// come back to us and are compared with `old` after the fact: a write that
/// lands between our read and our rename is never lost, because we then
/// exchange back. (A check before a plain rename would leave a window in
/// which an editor's save is overwritten.) Other writers that save by
/// rename-over, as editors do, are safe; only a second save landing inside
/// the microseconds between the two exchanges could still be undone.
pub fn replace_if_unchanged(path: &Path, old: &[u8], new: &[u8]) -> std::io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".gateway-config-")
        .tempfile_in(&dir)?;
    tmp.write_all(new)?;
    tmp.as_file().sync_all()?;
    // Keep the file's permissions: the temp file is created 0600.
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    let exchange = || renameat_with(CWD, tmp.path(), CWD, path, RenameFlags::EXCHANGE);
    // Most races are caught here, before anything is swapped.
    if std::fs::read(path)? != old {
        return Ok(false);
    }
    exchange()?;
    if std::fs::read(tmp.path())? != old {
        exchange()?; // put their version back; ours is dropped with `tmp`
        return Ok(false);
    }
    // The exchange is durable only once the directory is synced.
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(true) // `tmp` (now the old contents) is removed on drop
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::edit::{AutoscalingPatch, AutoscalingScope, NewDeployment};
    use routing::Routing;
    use routing::snapshot::Snapshot;

    const CONFIG: &str = r#"[admin]
api_may_set_paths = true
[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
[[models.environments]]
name = "production"
deployment = "a"
"#;

    fn local(id: &str, model: &str) -> NewDeployment {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "replicas": { "source": "local" },
            "engine": { "backend": "onnx", "model": model },
        }))
        .unwrap()
    }

    fn scale_a(doc: &mut ConfigDocument, max: u32) -> Result<(), EditError> {
        let patch = AutoscalingPatch {
            max_replica: Some(i64::from(max)),
            ..Default::default()
        };
        doc.set_autoscaling("m", AutoscalingScope::Deployment("a".into()), patch)
            .map(drop)
    }

    #[test]
    fn edits_naming_a_missing_file_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let model = dir.path().join("e5/model.onnx");
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::write(&model, "").unwrap();
        std::fs::write(model.with_file_name("tokenizer.json"), "{}").unwrap();
        let config = config::load_file_checked(&path).unwrap();
        let routing = Arc::new(Routing::new(Snapshot::new(&config)));
        let reloader = Arc::new(Reloader::new(&path, config, Arc::clone(&routing)));
        let store = ConfigStore::new(&path, Arc::clone(&reloader));

        // A deployment whose files exist is written and applied.
        store
            .edit(None, |doc| {
                doc.add_deployment("m", local("ok", "e5/model.onnx"))
            })
            .unwrap();
        assert!(routing.load().deployment("m", "ok").is_some());

        // A typo is refused as an invalid edit (400), located in the edit.
        let before = std::fs::read(&path).unwrap();
        let refused = store.edit(None, |doc| {
            doc.add_deployment("m", local("typo", "e5/modle.onnx"))
        });
        let Err(StoreError::Edit(EditError::Invalid(errors))) = refused else {
            panic!("{refused:?}")
        };
        let expected = format!(
            "models[0].deployments[2].engine.model: model file {} does not exist",
            dir.path().join("e5/modle.onnx").display()
        );
        assert!(errors.to_string().contains(&expected), "{errors}");
        assert!(
            errors
                .to_string()
                .starts_with(&format!("{}:", path.display())),
            "{errors}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
        assert_eq!(store.status().unwrap().1.map(|e| e.to_string()), None);

        // A file that goes missing makes the file invalid, as a broken hand
        // edit does: unrelated edits get 409, the status says why...
        std::fs::remove_file(model.with_file_name("tokenizer.json")).unwrap();
        let refused = store.edit(None, |doc| scale_a(doc, 3));
        assert!(
            matches!(refused, Err(StoreError::FileInvalid(_))),
            "{refused:?}"
        );
        let status = store.status().unwrap().1.expect("file errors").to_string();
        assert!(
            status.contains("models[0].deployments[1].engine.tokenizer: tokenizer file"),
            "{status}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
        // ...and an edit that removes the problem is accepted.
        store
            .edit(None, |doc| doc.delete_deployment("m", "ok"))
            .unwrap();
        assert!(routing.load().deployment("m", "ok").is_none());
        assert_eq!(store.status().unwrap().1.map(|e| e.to_string()), None);
    }

    #[test]
    fn if_match_accepts_the_current_revision_star_and_lists() {
        let r = Revision::of(b"x");
        assert!(r.matches(&r.etag()));
        assert!(r.matches(&r.to_string()));
        assert!(r.matches("*"));
        assert!(r.matches(&format!("\"nope\", W/{}", r.etag())));
        assert!(!r.matches("\"nope\""));
        assert_ne!(Revision::of(b"x"), Revision::of(b"y"));
    }
}
