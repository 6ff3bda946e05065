//! Each node's load per local deployment (requests in flight plus parked),
//! published under its lease for the leader to sum: `load/NODE`, JSON.

use std::collections::BTreeMap;

/// One node's load, by `MODEL/DEPLOYMENT`; deployments without load are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeLoad {
    /// Load by `MODEL/DEPLOYMENT`.
    pub deployments: BTreeMap<String, DeploymentLoad>,
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
