//! Each node's load per local deployment (requests in flight plus parked)
//! and its rollouts' per-side counts, published under its lease for the
//! leader to sum: `load/NODE`, JSON.

use std::collections::BTreeMap;

use etcd_client::GetOptions;
use routing::rollout::{SideCounts, SideSummary};

use super::document::{FleetError, SharedDocument};

/// One node's load, by `MODEL/DEPLOYMENT`; deployments without load are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeLoad {
    /// Load by `MODEL/DEPLOYMENT`.
    pub deployments: BTreeMap<String, DeploymentLoad>,
    /// What the node's traffic did on each side of a rollout in progress,
    /// by `MODEL/ENVIRONMENT`.
    #[serde(default)]
    pub rollouts: BTreeMap<String, RolloutCounts>,
}

/// One node's counts of one rollout's current stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutCounts {
    /// The stage they are of (each node starts counting afresh at each).
    pub stage: u32,
    /// The stable side's.
    pub stable: Counts,
    /// The canary side's.
    pub canary: Counts,
}

/// [`SideCounts`], as published.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Requests that ended.
    pub requests: u64,
    /// Of them, failed.
    pub errors: u64,
    /// Requests per latency bucket.
    pub latency: Vec<u64>,
}

impl From<SideCounts> for Counts {
    fn from(c: SideCounts) -> Self {
        Self {
            requests: c.requests,
            errors: c.errors,
            latency: c.latency,
        }
    }
}

impl From<&Counts> for SideCounts {
    fn from(c: &Counts) -> Self {
        Self {
            requests: c.requests,
            errors: c.errors,
            latency: c.latency.clone(),
        }
    }
}

/// The fleet's (stable, canary) summaries of rollout `model`/`environment`
/// at `stage`: every node's published counts of that stage, summed.
pub async fn fleet_rollout(
    document: &SharedDocument,
    model: &str,
    environment: &str,
    stage: u32,
) -> Result<(SideSummary, SideSummary), FleetError> {
    let prefix = load_prefix(document.prefix());
    let mut client = document.client();
    let listed = document
        .call(client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
        .await?;
    let name = format!("{model}/{environment}");
    let (mut stable, mut canary) = (SideCounts::default(), SideCounts::default());
    for kv in listed.kvs() {
        let Ok(load) = serde_json::from_slice::<NodeLoad>(kv.value()) else {
            continue;
        };
        if let Some(counts) = load.rollouts.get(&name).filter(|c| c.stage == stage) {
            stable.add(&SideCounts::from(&counts.stable));
            canary.add(&SideCounts::from(&counts.canary));
        }
    }
    Ok((stable.summary(), canary.summary()))
}

/// One deployment's load on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentLoad {
    /// Requests in flight plus parked.
    pub concurrency: u32,
    /// Requests parked, waiting for a replica.
    pub parked: u32,
}

impl NodeLoad {
    /// Whether `self` has requests parked that `before` did not: the leader
    /// must hear of it at once (a deployment may be at zero).
    pub fn newly_parked(&self, before: &NodeLoad) -> bool {
        self.deployments.iter().any(|(key, load)| {
            load.parked > 0 && before.deployments.get(key).is_none_or(|b| b.parked == 0)
        })
    }
}

/// `PREFIX/load/`.
pub(super) fn load_prefix(prefix: &str) -> String {
    format!("{prefix}/load/")
}

/// `MODEL/DEPLOYMENT`, as load records name a deployment.
pub(super) fn deployment_name((model, deployment): &(String, String)) -> String {
    format!("{model}/{deployment}")
}
