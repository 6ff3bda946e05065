//! [`TextBackend`]: a [`TextModel`] served as a [`Backend`], its batches on
//! the backend's own model threads, its model swappable between batches.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::TextModel;
use super::model_threads::ModelThreads;
use crate::backend::{Backend, BackendError, Input, ModelKind, Output};

/// Serves a [`TextModel`] as a [`Backend`]; [`TextBackend::swap`] replaces
/// the model between batches. Batches run on the backend's own model
/// threads ([`super::model_threads`]), as many as the first model can run at once.
#[derive(Debug)]
pub struct TextBackend {
    name: &'static str,
    model: ArcSwap<TextModel>,
    threads: ModelThreads,
}

impl TextBackend {
    /// Serves `model` under the backend name `name` (`onnx`, `tensorrt`).
    /// Fails only when its model threads cannot be started.
    pub fn new(name: &'static str, model: TextModel) -> std::io::Result<Self> {
        let threads = ModelThreads::start(name, model.parallel_runs())?;
        Ok(Self {
            name,
            model: ArcSwap::from_pointee(model),
            threads,
        })
    }

    /// Makes `model` serve the next batches; running ones finish on the old.
    pub fn swap(&self, model: TextModel) {
        self.model.store(Arc::new(model));
    }
}

#[async_trait::async_trait]
impl Backend for TextBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn check(&self, mut inputs: Vec<Input>) -> Result<Vec<Input>, BackendError> {
        // Tokenising a large body takes milliseconds: not on the event loop.
        let model = self.model.load_full();
        tokio::task::spawn_blocking(move || model.check(&mut inputs).map(|()| inputs))
            .await
            .map_err(|e| BackendError::Failed(format!("tokenizer thread failed: {e}")))?
    }

    async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError> {
        let model = self.model.load_full();
        self.threads
            .run(move || model.infer(&inputs))
            .await
            .map_err(|e| BackendError::Failed(e.to_string()))?
    }

    fn kind(&self) -> ModelKind {
        self.model.load().kind()
    }
}
