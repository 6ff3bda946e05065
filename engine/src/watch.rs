//! Live model reload (`--watch`, for development deployments): when the
//! model file changes, the new model is loaded and warmed up on the
//! watcher's thread while the old one keeps serving, then swapped in
//! between batches. A model that fails to load is reported (log, metric,
//! `GET /info`) and the old one keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use config::EngineBackend;
use config::watch::{FileWatch, WatchError, watch_file};
use serde_json::{Value, json};

use crate::text::{TextBackend, TextModel};

/// Writes of one file copy come as a burst; load once it settles.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Outcomes of model reloads so far.
#[derive(Debug, Default)]
pub struct ModelReloads {
    applied: AtomicU64,
    failed: AtomicU64,
    last_error: ArcSwapOption<String>,
}

impl ModelReloads {
    /// The reload fields of `GET /info`.
    pub fn info(&self) -> Value {
        json!({
            "model_reloads": {
                "applied": self.applied.load(Ordering::Relaxed),
                "failed": self.failed.load(Ordering::Relaxed),
                "last_error": self.last_error.load().as_deref(),
            }
        })
    }
}

/// Watches the model file of `settings` and swaps each new model into
/// `backend`, for as long as the process runs.
pub fn watch_model(
    backend: Arc<TextBackend>,
    settings: EngineBackend,
    reloads: Arc<ModelReloads>,
) -> Result<(), WatchError> {
    let (EngineBackend::Onnx(model) | EngineBackend::TensorRt(model)) = &settings else {
        return Ok(()); // nothing to watch
    };
    let path = model.model.clone();
    let watched = path.clone();
    watch_file(
        &watched,
        DEBOUNCE,
        "model-watch",
        move || match TextModel::load(&settings) {
            Ok(model) => {
                backend.swap(model);
                reloads.applied.fetch_add(1, Ordering::Relaxed);
                reloads.last_error.store(None);
                crate::telemetry::model_reload(true);
                log::info!("model {}: reloaded", path.display());
            }
            Err(e) => {
                reloads.failed.fetch_add(1, Ordering::Relaxed);
                reloads.last_error.store(Some(Arc::new(e.to_string())));
                crate::telemetry::model_reload(false);
                log::error!(
                    "model {}: reload failed, the previous model keeps serving: {e}",
                    path.display()
                );
            }
        },
    )
    .map(FileWatch::detach)
}
