//! Hot reload: watch the config file, and on each change parse, validate,
//! build the complete new snapshot and publish it with one atomic store. A
//! bad file (invalid, or naming a model, tokenizer or runtime library of a
//! local deployment that does not exist) is rejected with the same located
//! errors as `gateway check` and the previous snapshot keeps serving.
//! Watching (directory, debounce) is [`config::watch`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use config::watch::{FileWatch, WatchError};
use config::{Config, ConfigErrors};

use routing::Routing;
use routing::snapshot::Snapshot;
use routing::telemetry;

/// Events closer together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Applies config files to a [`Routing`] and counts the outcomes.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    routing: Arc<Routing>,
    current: std::sync::Mutex<Config>,
    revision: AtomicU64,
    rejected: AtomicU64,
}

/// What one reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new snapshot is serving.
    Applied {
        /// Revision number of this process's applied configs (1 = startup).
        revision: u64,
    },
    /// The file did not change anything the snapshot holds.
    Unchanged,
    /// The file is invalid; the previous snapshot keeps serving.
    Rejected(ConfigErrors),
}

/// The revision serving now, and since when.
fn record_applied(revision: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(telemetry::CONFIG_REVISION).set(revision as f64);
    metrics::gauge!(telemetry::CONFIG_LAST_RELOAD).set(now.as_secs_f64());
}

impl Reloader {
    /// A reloader for `path`, whose `initial` config `routing` already serves.
    pub fn new(path: &Path, initial: Config, routing: Arc<Routing>) -> Self {
        record_applied(1);
        Self {
            path: path.to_owned(),
            routing,
            current: std::sync::Mutex::new(initial),
            revision: AtomicU64::new(1),
            rejected: AtomicU64::new(0),
        }
    }

    /// Reads the file once and applies it if valid, and if every file its
    /// local replicas would load exists ([`config::load_file_checked`]).
    pub fn reload(&self) -> ReloadOutcome {
        self.apply(config::load_file_checked(&self.path))
    }

    /// Applies a config loaded from wherever it lives (a file, the fleet's
    /// shared document), or counts its rejection: the previous config
    /// keeps serving.
    pub fn apply(&self, loaded: Result<Config, ConfigErrors>) -> ReloadOutcome {
        let config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "rejected").increment(1);
                return ReloadOutcome::Rejected(errors);
            }
        };
        // Only the control plane takes this lock, never a request.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current == config {
            return ReloadOutcome::Unchanged;
        }
        if current.listeners != config.listeners || current.server != config.server {
            log::warn!(
                "config {}: [listeners] and [server] changes take effect at the next restart",
                self.path.display()
            );
        }
        let update = Snapshot::rebuild(&config, &self.routing.load_full());
        self.routing.publish(update);
        *current = config;
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "applied").increment(1);
        record_applied(revision);
        ReloadOutcome::Applied { revision }
    }

    /// The config routing serves now (the last one applied).
    pub fn current(&self) -> Config {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applied revisions so far (1 = the startup config).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// Rejected reloads so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Watches the file from a background thread, logging every outcome,
    /// until the returned watch is dropped.
    pub fn watch(self: Arc<Self>) -> Result<FileWatch, WatchError> {
        let path = self.path.clone();
        config::watch::watch_file(&path, DEBOUNCE, "config-watch", move || {
            match self.reload() {
                ReloadOutcome::Applied { revision } => {
                    log::info!(
                        "config {}: applied revision {revision}",
                        self.path.display()
                    );
                }
                ReloadOutcome::Unchanged => {
                    log::debug!("config {}: no change", self.path.display())
                }
                ReloadOutcome::Rejected(errors) => {
                    log::error!("config rejected, previous config keeps serving:\n{errors}");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::snapshot::Target;

    const V1: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
[[models.environments]]
name = "production"
deployment = "a"
"#;

    fn setup(dir: &Path) -> (PathBuf, Reloader, Arc<Routing>) {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, V1).unwrap();
        let config = config::load_file(&path).unwrap();
        let routing = Arc::new(Routing::new(Snapshot::new(&config)));
        let reloader = Reloader::new(&path, config, Arc::clone(&routing));
        (path, reloader, routing)
    }

    #[test]
    fn applies_valid_changes_rejects_invalid_ones_and_skips_no_ops() {
        let dir = std::env::temp_dir().join(format!("igw-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, reloader, routing) = setup(&dir);
        let lease = routing
            .load()
            .model("m")
            .unwrap()
            .resolve(Target::Production)
            .unwrap()
            .pool()
            .admit(0);
        assert!(matches!(lease, routing::pool::Admission::Go(_)));

        assert!(matches!(reloader.reload(), ReloadOutcome::Unchanged));

        let v2 = V1.replace("[[models.environments]]", "[[models.environments]]\nname = \"staging\"\ndeployment = \"a\"\n[[models.environments]]");
        std::fs::write(&path, &v2).unwrap();
        assert!(matches!(
            reloader.reload(),
            ReloadOutcome::Applied { revision: 2 }
        ));
        let snapshot = routing.load();
        let staging = snapshot
            .model("m")
            .unwrap()
            .resolve(Target::Environment("staging"))
            .unwrap();
        assert_eq!(staging.pool().in_flight(), 1, "runtime state survived");
        drop(lease);

        std::fs::write(&path, "[[models]\n").unwrap();
        match reloader.reload() {
            ReloadOutcome::Rejected(errors) => {
                assert!(errors.to_string().contains("gateway.toml:1:"), "{errors}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((reloader.revision(), reloader.rejected()), (2, 1));
        assert!(
            routing
                .load()
                .model("m")
                .unwrap()
                .resolve(Target::Environment("staging"))
                .is_ok()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_local_deployment_naming_a_missing_model_is_rejected_until_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (path, reloader, routing) = setup(dir.path());
        let local = "[[models.deployments]]\nid = \"p\"\n[models.deployments.engine]\nbackend = \"onnx\"\nmodel = \"e5/model.onnx\"\n";
        let edited = V1.replace(
            "[[models.environments]]",
            &format!("{local}[[models.environments]]"),
        );
        std::fs::write(&path, &edited).unwrap();
        let model = dir.path().join("e5/model.onnx");
        match reloader.reload() {
            ReloadOutcome::Rejected(errors) => {
                let text = errors.to_string();
                let expected = format!(
                    "gateway.toml:11:1: models[0].deployments[1].engine.model: model file {} does not exist",
                    model.display()
                );
                assert!(text.contains(&expected), "{text}");
                assert!(text.contains("engine.tokenizer: tokenizer file"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((reloader.revision(), reloader.rejected()), (1, 1));
        assert!(routing.load().deployment("m", "p").is_none());

        // The files appear: the same file is applied.
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::write(&model, "").unwrap();
        std::fs::write(model.with_file_name("tokenizer.json"), "{}").unwrap();
        assert!(matches!(
            reloader.reload(),
            ReloadOutcome::Applied { revision: 2 }
        ));
        assert!(routing.load().deployment("m", "p").is_some());
    }
}
