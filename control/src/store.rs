//! The config document as the management API's one source of truth: the
//! file the operator edits by hand, or a fleet's shared document in etcd
//! ([`crate::fleet`]). Every API mutation is a read-modify-write of it:
//! read it, check the caller's revision, apply the edit to the TOML
//! document (comments and layout kept), validate (the files a local
//! replica would load included, as a reload does), write it only if it is
//! still what was read, then apply it through the same reload path as a
//! hand edit before answering.
//!
//! A file's revision is a digest of its bytes, so hand edits change it as
//! API edits do; a fleet document's is the etcd key's modification
//! revision, and its writes are compare-and-swap transactions on it. A
//! client holding a stale revision (`If-Match`) gets
//! [`StoreError::Stale`], never a silent overwrite. A write that lands
//! while an API edit is being written (a hand edit, [`replace_if_unchanged`];
//! another gateway's edit) is detected and the edit is redone on top of it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::ConfigErrors;
use config::edit::{ConfigDocument, EditError};
use sha2::{Digest, Sha256};

use crate::fleet::{FleetConfig, FleetError};
use crate::reload::{ReloadOutcome, Reloader};

/// How many times an edit is redone when hand edits keep racing it. Each
/// try is a parse and two validations; 5 was too few for a file rewritten
/// every few milliseconds on a loaded 2-core machine (seen in CI).
const ATTEMPTS: usize = 20;

/// A version of the config document: for a file, the first 16 bytes of
/// its SHA-256 in hex; for a fleet's document, the etcd revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(String);

impl Revision {
    fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(&Sha256::digest(bytes)[..16]))
    }

    fn etcd(revision: i64) -> Self {
        Self(revision.to_string())
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

/// Why a read or an edit of the config document failed.
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
    /// Reading or writing the fleet's document in etcd failed (503).
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The caller's revision is not the document's (412).
    #[error("the config changed since revision {given}; it is now {current}: read it again")]
    Stale {
        /// What the caller sent.
        given: String,
        /// The document's revision now.
        current: Revision,
    },
    /// The document is invalid (a broken hand edit): no API edit is
    /// applied on top of it until it is fixed (409).
    #[error("the config file is invalid; fix it first:\n{0}")]
    FileInvalid(ConfigErrors),
    /// The edit itself was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// Other writers kept changing the document while the edit was being
    /// written.
    #[error("the config file kept changing; try again")]
    Busy,
}

/// Where a config document lives: read with its revision, written only
/// if unchanged, and applied once written.
trait Backing: fmt::Debug + Send + Sync {
    /// The document's bytes and revision now. Blocks.
    fn read(&self) -> Result<(Vec<u8>, Revision), StoreError>;
    /// Writes `new` if the document still is `old` (read at `revision`):
    /// the new revision, or `None` (nothing written) if it changed. Blocks.
    fn replace(
        &self,
        revision: &Revision,
        old: &[u8],
        new: &str,
    ) -> Result<Option<Revision>, StoreError>;
    /// Applies `text`, just written as `revision`, to routing.
    fn apply(&self, text: &str, revision: &Revision) -> Option<ReloadOutcome>;
    /// The document's name in errors and logs.
    fn origin(&self) -> String;
    /// The directory relative file paths in the document are taken from.
    fn base(&self) -> &Path;
    /// Whether what routing serves may be behind the document (a fleet
    /// node cut off from etcd).
    fn stale(&self) -> bool {
        false
    }
    /// Who leads the fleet, for a fleet node.
    fn leader(&self) -> Option<String> {
        None
    }
}

/// A config file the operator edits by hand.
#[derive(Debug)]
struct FileBacking {
    path: PathBuf,
    reloader: Arc<Reloader>,
}

impl FileBacking {
    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Backing for FileBacking {
    fn read(&self) -> Result<(Vec<u8>, Revision), StoreError> {
        let bytes = std::fs::read(&self.path).map_err(|source| self.io(source))?;
        let revision = Revision::of(&bytes);
        Ok((bytes, revision))
    }

    fn replace(&self, _: &Revision, old: &[u8], new: &str) -> Result<Option<Revision>, StoreError> {
        let replaced = replace_if_unchanged(&self.path, old, new.as_bytes())
            .map_err(|source| self.io(source))?;
        Ok(replaced.then(|| Revision::of(new.as_bytes())))
    }

    /// Applies the file now, so routing has changed when the API answers;
    /// the watcher then finds nothing left to do.
    fn apply(&self, _: &str, _: &Revision) -> Option<ReloadOutcome> {
        Some(self.reloader.reload())
    }

    fn origin(&self) -> String {
        self.path.display().to_string()
    }

    fn base(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

/// A fleet's shared document in etcd. The store's callers run on blocking
/// threads; the etcd calls run on the control plane's runtime.
#[derive(Debug)]
struct FleetBacking {
    fleet: Arc<FleetConfig>,
    runtime: tokio::runtime::Handle,
}

impl Backing for FleetBacking {
    /// The document in etcd; while etcd is out of reach, the one this node
    /// serves (reads still answer; a write then fails on the etcd call).
    fn read(&self) -> Result<(Vec<u8>, Revision), StoreError> {
        let version = match self.runtime.block_on(self.fleet.document().get()) {
            Ok(version) => version,
            Err(e) => {
                log::debug!("{e}: answering from the document this node serves");
                self.fleet.serving()
            }
        };
        Ok((version.text.into_bytes(), Revision::etcd(version.revision)))
    }

    fn replace(
        &self,
        revision: &Revision,
        _: &[u8],
        new: &str,
    ) -> Result<Option<Revision>, StoreError> {
        let revision: i64 = revision.0.parse().expect("a fleet revision is a number");
        let written = self
            .runtime
            .block_on(self.fleet.document().put_if(revision, new))?;
        Ok(written.map(Revision::etcd))
    }

    /// Applies the document now, so routing has changed when the API
    /// answers; the watch event for it then finds it applied already.
    fn apply(&self, text: &str, revision: &Revision) -> Option<ReloadOutcome> {
        let revision: i64 = revision.0.parse().expect("a fleet revision is a number");
        self.fleet.apply(text, revision)
    }

    fn origin(&self) -> String {
        self.fleet.document().origin()
    }

    fn base(&self) -> &Path {
        self.fleet.document().base()
    }

    fn stale(&self) -> bool {
        self.fleet.is_stale()
    }

    fn leader(&self) -> Option<String> {
        self.fleet.leader()
    }
}

/// Reads and edits one config document, and applies what it writes.
#[derive(Debug)]
pub struct ConfigStore {
    backing: Box<dyn Backing>,
    reloader: Arc<Reloader>,
    writing: std::sync::Mutex<()>,
}

impl ConfigStore {
    /// A store for the file `reloader` watches.
    pub fn new(path: &Path, reloader: Arc<Reloader>) -> Self {
        let backing = FileBacking {
            path: path.to_owned(),
            reloader: Arc::clone(&reloader),
        };
        Self {
            backing: Box::new(backing),
            reloader,
            writing: std::sync::Mutex::new(()),
        }
    }

    /// A store for the fleet's shared document that `fleet` follows; its
    /// etcd calls run on `runtime` (the control plane's).
    pub fn fleet(
        fleet: Arc<FleetConfig>,
        reloader: Arc<Reloader>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            backing: Box::new(FleetBacking { fleet, runtime }),
            reloader,
            writing: std::sync::Mutex::new(()),
        }
    }

    /// The reload path the store applies its edits through (and its counts).
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Where the document lives: a file's path, or `etcd:<key>`.
    pub fn origin(&self) -> String {
        self.backing.origin()
    }

    /// Whether routing may be behind the document: a fleet node that
    /// cannot reach etcd serves its last config.
    pub fn stale(&self) -> bool {
        self.backing.stale()
    }

    /// Which node leads the fleet (`None` outside a fleet, or while no
    /// leader is known).
    pub fn leader(&self) -> Option<String> {
        self.backing.leader()
    }

    /// The document's revision and, if it is invalid, why: the errors a
    /// reload of it reports, a local replica's missing files included.
    /// Blocks (file or etcd I/O).
    pub fn status(&self) -> Result<(Revision, Option<ConfigErrors>), StoreError> {
        let (bytes, revision) = self.backing.read()?;
        let errors = match self.parse(&bytes) {
            Err(StoreError::FileInvalid(errors)) => Some(errors),
            Ok(doc) => doc.check_files(self.backing.base()).err(),
            Err(_) => None,
        };
        Ok((revision, errors))
    }

    /// The document, parsed, and its revision. Blocks (file or etcd I/O).
    pub fn read(&self) -> Result<(ConfigDocument, Revision), StoreError> {
        let (bytes, revision) = self.backing.read()?;
        Ok((self.parse(&bytes)?, revision))
    }

    /// Applies `edit` to the document if `if_match` (when given) names its
    /// current revision, writes it, and applies it to routing before
    /// returning the edit's result and the new revision. An edit that
    /// changes nothing writes nothing. Blocks (file or etcd I/O).
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
            let (before, revision) = self.backing.read()?;
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
            match self.backing.replace(&revision, &before, &after)? {
                Some(written) => {
                    self.apply(&after, &written);
                    return Ok((result, written));
                }
                // Another writer landed meanwhile: redo the edit on top.
                None => continue,
            }
        }
        Err(StoreError::Busy)
    }

    fn parse(&self, bytes: &[u8]) -> Result<ConfigDocument, StoreError> {
        let text = String::from_utf8_lossy(bytes);
        ConfigDocument::parse(&text, &self.backing.origin()).map_err(StoreError::FileInvalid)
    }

    /// Refuses an edited document naming a file that a local replica would
    /// load and that does not exist: an invalid edit (400) when the edit
    /// brought the problem, [`StoreError::FileInvalid`] (409) when the
    /// document as it is (`before`) already has one, as for any broken
    /// hand edit.
    fn check_files(&self, before: &[u8], edited: &ConfigDocument) -> Result<(), StoreError> {
        let base = self.backing.base();
        let Err(errors) = edited.check_files(base) else {
            return Ok(());
        };
        match self.parse(before)?.check_files(base) {
            Err(already) => Err(StoreError::FileInvalid(already)),
            Ok(()) => Err(StoreError::Edit(EditError::Invalid(errors))),
        }
    }

    /// Applies what was just written, so routing has changed when the API
    /// answers.
    fn apply(&self, text: &str, revision: &Revision) {
        let origin = self.backing.origin();
        match self.backing.apply(text, revision) {
            Some(ReloadOutcome::Applied { revision: local }) => {
                log::info!(
                    "config {origin}: applied API edit as revision {revision} (local {local})"
                );
            }
            Some(ReloadOutcome::Unchanged) | None => {}
            Some(ReloadOutcome::Rejected(errors)) => {
                // Cannot happen for a validated edit unless a broken hand
                // edit replaced it in between; the watcher reports that.
                log::error!("config rejected after an API edit:\n{errors}");
            }
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
