//! What the fleet's leader placed on this node: how many replicas of each
//! local deployment it runs. The scaling controller starts and stops
//! replicas to match; while the placement is unknown or stale (etcd out of
//! reach) it holds what runs and starts or stops nothing on its own.
//!
//! Keys, under the fleet's prefix: `placement/MODEL/DEPLOYMENT`, JSON
//! `{"desired": N, "nodes": {"NODE": COUNT, ...}}`, written by the leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::Notify;

use super::document::{Backoff, FleetError, SharedDocument};
use crate::plane::ShutdownSignal;

/// One deployment's placement, as the leader writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentPlacement {
    /// Replicas the fleet runs in all.
    pub desired: u32,
    /// How many on each node.
    pub nodes: BTreeMap<String, u32>,
}

/// What the controller should run of one deployment on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// This many (0 when the leader placed none here).
    Count(u32),
    /// Keep what runs: the placement is not known yet, or is stale.
    Hold,
}

/// This node's view of the leader's placements.
#[derive(Debug)]
pub struct Placement {
    node: String,
    /// Every deployment's placement, by (model, deployment).
    placements: std::sync::Mutex<HashMap<(String, String), DeploymentPlacement>>,
    /// Whether the placements are a current listing (read and followed).
    current: AtomicBool,
    /// Wakes the scaling controller when a placement changes.
    events: Arc<Notify>,
}

impl Placement {
    /// The placements for node `node`, waking `events` (the scaling
    /// controller's) at each change.
    pub fn new(node: &str, events: Arc<Notify>) -> Self {
        Self {
            node: node.to_owned(),
            placements: std::sync::Mutex::new(HashMap::new()),
            current: AtomicBool::new(false),
            events,
        }
    }

    /// How many replicas of `model`/`deployment` this node should run.
    pub fn placed(&self, model: &str, deployment: &str) -> Placed {
        if !self.current.load(Ordering::Relaxed) {
            return Placed::Hold;
        }
        let placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_owned(), deployment.to_owned());
        Placed::Count(
            placements
                .get(&key)
                .and_then(|p| p.nodes.get(&self.node))
                .copied()
                .unwrap_or(0),
        )
    }

    /// Follows the leader's placements until shutdown; marks them stale
    /// (the controller holds) whenever etcd is out of reach.
    pub async fn run(self: Arc<Self>, document: SharedDocument, mut shutdown: ShutdownSignal) {
        let mut backoff = Backoff::default();
        loop {
            let error = tokio::select! {
                error = self.follow(&document) => error,
                () = shutdown.requested() => return,
            };
            if self.current.swap(false, Ordering::Relaxed) {
                log::warn!("fleet placement stale: {error}; holding the replicas that run");
            }
            if !backoff.wait(&mut shutdown).await {
                return;
            }
        }
    }

    async fn follow(&self, document: &SharedDocument) -> FleetError {
        match self.follow_inner(document).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn follow_inner(
        &self,
        document: &SharedDocument,
    ) -> Result<std::convert::Infallible, FleetError> {
        let prefix = placement_prefix(document.prefix());
        let mut client = document.client();
        let listed = document
            .call(client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut placements = HashMap::new();
        for kv in listed.kvs() {
            if let Some((key, placement)) = parse(&prefix, kv.key(), kv.value()) {
                placements.insert(key, placement);
            }
        }
        *self.placements.lock().unwrap_or_else(|p| p.into_inner()) = placements;
        let from = listed.header().map_or(0, |h| h.revision()) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch = document
            .call(client.watch(prefix.as_str(), Some(options)))
            .await?;
        self.current.store(true, Ordering::Relaxed);
        self.events.notify_one();
        loop {
            let response = document.next(&mut watch).await?;
            let mut placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => {
                        if let Some((key, placement)) = parse(&prefix, kv.key(), kv.value()) {
                            placements.insert(key, placement);
                        }
                    }
                    EventType::Delete => {
                        if let Some(key) = deployment_of(&prefix, kv.key()) {
                            placements.remove(&key);
                        }
                    }
                }
            }
            drop(placements);
            self.events.notify_one();
        }
    }
}

/// `PREFIX/placement/`.
pub(super) fn placement_prefix(prefix: &str) -> String {
    format!("{prefix}/placement/")
}

/// `PREFIX/placement/MODEL/DEPLOYMENT`.
pub(super) fn placement_key(prefix: &str, (model, deployment): &(String, String)) -> String {
    format!("{}{model}/{deployment}", placement_prefix(prefix))
}

fn deployment_of(prefix: &str, key: &[u8]) -> Option<(String, String)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (model, deployment) = rest.split_once('/')?;
    Some((model.to_owned(), deployment.to_owned()))
}

fn parse(
    prefix: &str,
    key: &[u8],
    value: &[u8],
) -> Option<((String, String), DeploymentPlacement)> {
    let deployment = deployment_of(prefix, key)?;
    match serde_json::from_slice(value) {
        Ok(placement) => Some((deployment, placement)),
        Err(e) => {
            log::error!(
                "fleet placement of {}/{}: unreadable: {e}",
                deployment.0,
                deployment.1
            );
            None
        }
    }
}
