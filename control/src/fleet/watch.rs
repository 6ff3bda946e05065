//! Following the shared document: every revision applied in order, the
//! link to etcd watched, staleness reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::EventType;
use routing::telemetry;

use super::document::{Backoff, FleetError, SharedDocument, Versioned};
use crate::plane::ShutdownSignal;
use crate::reload::{ReloadOutcome, Reloader};

/// Applies the fleet's shared document to this node's routing.
#[derive(Debug)]
pub struct FleetConfig {
    document: SharedDocument,
    reloader: Arc<Reloader>,
    /// The highest etcd revision applied or rejected: an older one (a watch
    /// event overtaken by the API's own apply) is skipped.
    seen: std::sync::Mutex<i64>,
    /// The document routing serves now (the last applied).
    serving: std::sync::Mutex<Versioned>,
    stale: AtomicBool,
    /// The node that leads the fleet, as this node last heard.
    leader: std::sync::Mutex<Option<String>>,
}

impl FleetConfig {
    /// Follows `document` for `reloader`, whose initial config is the
    /// document `initial` (applied at start-up).
    pub fn new(document: SharedDocument, reloader: Arc<Reloader>, initial: Versioned) -> Self {
        metrics::gauge!(telemetry::CONFIG_FLEET_REVISION).set(initial.revision as f64);
        metrics::gauge!(telemetry::CONFIG_STALE).set(0.0);
        Self {
            document,
            reloader,
            seen: std::sync::Mutex::new(initial.revision),
            serving: std::sync::Mutex::new(initial),
            stale: AtomicBool::new(false),
            leader: std::sync::Mutex::new(None),
        }
    }

    /// The document this node follows.
    pub fn document(&self) -> &SharedDocument {
        &self.document
    }

    /// The reload path revisions are applied through (and its counts).
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Whether etcd is out of reach: the node serves its last config and
    /// its known replicas, and changes nothing on its own.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The document routing serves now: what API reads show while etcd is
    /// out of reach.
    pub fn serving(&self) -> Versioned {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The node that leads the fleet, as this node last heard.
    pub fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records who leads (`None`: nobody this node knows of).
    pub fn set_leader(&self, leader: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
    }

    /// Applies `text`, the document at etcd `revision`, unless a newer one
    /// was already applied (or rejected). `None` when skipped.
    pub fn apply(&self, text: &str, revision: i64) -> Option<ReloadOutcome> {
        // Held across the (synchronous) apply so revisions land in order.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if revision <= *seen {
            return None;
        }
        *seen = revision;
        let outcome = self.reloader.apply(self.document.load(text));
        if !matches!(outcome, ReloadOutcome::Rejected(_)) {
            *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Versioned {
                text: text.to_owned(),
                revision,
                read_at: revision,
            };
        }
        let origin = self.document.origin();
        match &outcome {
            ReloadOutcome::Applied { revision: local } => {
                metrics::gauge!(telemetry::CONFIG_FLEET_REVISION).set(revision as f64);
                log::info!("config {origin}: applied etcd revision {revision} (local {local})");
            }
            ReloadOutcome::Unchanged => {
                metrics::gauge!(telemetry::CONFIG_FLEET_REVISION).set(revision as f64);
                log::debug!("config {origin}: etcd revision {revision} changes nothing here");
            }
            ReloadOutcome::Rejected(errors) => log::error!(
                "config {origin}: etcd revision {revision} rejected, previous config keeps serving:\n{errors}"
            ),
        }
        Some(outcome)
    }

    /// Follows the document until shutdown: reads it, applies it, watches
    /// it from there; when the link breaks, reports stale and tries again
    /// (reading the document anew, so nothing missed is lost).
    pub async fn run(self: Arc<Self>, mut shutdown: ShutdownSignal) {
        let mut backoff = Backoff::default();
        loop {
            let error = tokio::select! {
                error = self.follow() => error,
                () = shutdown.requested() => return,
            };
            if !self.stale.swap(true, Ordering::Relaxed) {
                metrics::gauge!(telemetry::CONFIG_STALE).set(1.0);
                log::warn!("fleet config stale: {error}; serving the last config");
            } else {
                log::debug!("fleet config still stale: {error}");
            }
            if !backoff.wait(&mut shutdown).await {
                return;
            }
            if matches!(error, FleetError::WatchEnded { .. }) {
                backoff.reset(); // etcd answered: not a dead link
            }
        }
    }

    /// Reads, applies and watches the document until the link fails.
    async fn follow(&self) -> FleetError {
        let current = match self.document.get().await {
            Ok(current) => current,
            Err(e) => return e,
        };
        self.apply_version(&current);
        let mut stream = match self.document.watch_from(current.read_at + 1).await {
            Ok(stream) => stream,
            Err(e) => return e,
        };
        if self.stale.swap(false, Ordering::Relaxed) {
            metrics::gauge!(telemetry::CONFIG_STALE).set(0.0);
            log::info!(
                "fleet config caught up at etcd revision {}",
                current.read_at
            );
        }
        loop {
            let response = match self.document.next(&mut stream).await {
                Ok(response) => response,
                Err(e) => return e,
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match self.document.text(kv.value()) {
                        Ok(text) => {
                            self.apply(&text, kv.mod_revision());
                        }
                        Err(e) => log::error!("{e}: previous config keeps serving"),
                    },
                    EventType::Delete => log::error!(
                        "config {}: the key was deleted (etcd revision {}); the previous config keeps serving until a document is pushed",
                        self.document.origin(),
                        kv.mod_revision()
                    ),
                }
            }
        }
    }

    fn apply_version(&self, version: &Versioned) {
        if version.revision > 0 {
            self.apply(&version.text, version.revision);
        }
    }
}
