//! `[fleet]`: the gateways that share one config through etcd.

/// Where a fleet's shared document lives: a gateway whose file has a
/// `[fleet]` table takes its keys, models, deployments and environments
/// from etcd instead of from the file, which keeps only what belongs to its
/// machine (`[listeners]`, `[server]`, `[node]`, `[fleet]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// etcd client URLs (`http://host:2379`), tried in turn.
    pub endpoints: Vec<String>,
    /// The fleet's key prefix: fleets with different prefixes share one
    /// etcd without seeing each other. Starts with `/`, no trailing `/`.
    pub prefix: String,
    /// How long a node's registration (and its replicas') outlives its
    /// last keep-alive: a node that dies leaves routing everywhere within
    /// this time (`lease_ttl_secs`, default 10).
    pub lease_ttl: std::time::Duration,
}

impl Fleet {
    /// The prefix when `[fleet]` names none.
    pub const DEFAULT_PREFIX: &'static str = "/inference-gateway";

    /// `lease_ttl_secs` when `[fleet]` names none.
    pub const DEFAULT_LEASE_TTL_SECS: u32 = 10;

    /// The etcd key that holds the shared document (TOML text).
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }
}

/// The top-level sections of a config file, by where they belong in a
/// fleet: on every node's own file, or in the shared document.
pub const NODE_SECTIONS: [&str; 4] = ["listeners", "server", "node", "fleet"];

/// The sections the shared document holds (and a node's file may not).
pub const SHARED_SECTIONS: [&str; 3] = ["api_keys", "models", "admin"];
