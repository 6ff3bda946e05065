//! Membership and the replica registry: each node registers itself and
//! the replicas it runs under one etcd lease; every node routes to every
//! node's ready replicas. A node that dies stops renewing its lease, etcd
//! deletes its keys when the lease's TTL runs out, and its replicas leave
//! routing on every other node.
//!
//! Keys, under the fleet's prefix:
//! - `nodes/NODE`: the node's addresses and capacity (JSON);
//! - `replicas/MODEL/DEPLOYMENT/NODE/ADDRESS`: a ready replica (JSON).
//!
//! A node's own replicas are the ones its scaling controller put in the
//! pools of local deployments; every other replica there is one this
//! registry added from another node's keys, so the two never mix.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::{Config, ReplicaSource};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use routing::Routing;
use routing::pool::Pool;
use routing::replicas::Replica;

use super::document::{Backoff, FleetError, SharedDocument};
use super::load::{DeploymentLoad, NodeLoad, RolloutCounts, deployment_name, load_prefix};
use crate::plane::ShutdownSignal;

/// How often the node compares its local replicas with what it published,
/// and re-applies other nodes' replicas to pools a config change created.
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// How often a node's load is published at most (newly parked requests
/// are published at once: they may wait for a scale from zero).
const LOAD_EVERY: Duration = Duration::from_millis(250);

/// A deployment, by model and deployment id.
type DeploymentKey = (String, String);

/// Other nodes' replicas this registry put in one pool, by address.
type Added = (Arc<Pool>, HashMap<SocketAddr, Arc<Replica>>);

/// What a node says about itself under `nodes/NODE`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its predict listener.
    pub predict: SocketAddr,
    /// Its admin listener.
    pub admin: SocketAddr,
    /// Its declared CPU (thousandths of a core), if declared.
    pub cpu_millis: Option<u32>,
    /// Its declared memory (MiB), if declared.
    pub memory_mib: Option<u64>,
}

/// This node's membership and its view of every node's replicas.
#[derive(Debug)]
pub struct Registry {
    document: SharedDocument,
    routing: Arc<Routing>,
    record: NodeRecord,
    /// Other nodes' replicas as etcd lists them.
    remote: HashMap<DeploymentKey, HashMap<SocketAddr, String>>,
    /// What this registry put in each pool, to take out again.
    added: HashMap<DeploymentKey, Added>,
    /// This node's replicas as published under the current lease.
    published: HashSet<(DeploymentKey, SocketAddr)>,
    /// This node's load as last published, and when.
    load: Option<(NodeLoad, tokio::time::Instant)>,
}

impl Registry {
    /// The registry of the node `document` belongs to, describing it as
    /// `record`, routing other nodes' replicas in `routing`.
    pub fn new(document: SharedDocument, routing: Arc<Routing>, record: NodeRecord) -> Self {
        Self {
            document,
            routing,
            record,
            remote: HashMap::new(),
            added: HashMap::new(),
            published: HashSet::new(),
            load: None,
        }
    }

    /// Registers the node and keeps its registration until shutdown,
    /// registering again after any loss of etcd. Other nodes' replicas
    /// stay in routing while etcd is out of reach (the node serves what it
    /// knows); they leave when etcd says their node is gone.
    pub async fn run(mut self, mut shutdown: ShutdownSignal) {
        let mut backoff = Backoff::default();
        loop {
            let error = tokio::select! {
                error = self.session() => error,
                () = shutdown.requested() => return,
            };
            log::warn!(
                "fleet node {}: registration lost: {error}; registering again",
                self.record.name
            );
            self.published.clear();
            self.load = None;
            if !backoff.wait(&mut shutdown).await {
                return;
            }
        }
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.document.prefix())
    }

    fn replicas_prefix(&self) -> String {
        format!("{}/replicas/", self.document.prefix())
    }

    fn replica_key(&self, (model, deployment): &DeploymentKey, addr: SocketAddr) -> String {
        format!(
            "{}{model}/{deployment}/{}/{addr}",
            self.replicas_prefix(),
            self.record.name
        )
    }

    /// One lease: register, publish, follow, until etcd is lost.
    async fn session(&mut self) -> FleetError {
        match self.serve_lease().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn serve_lease(&mut self) -> Result<std::convert::Infallible, FleetError> {
        let document = self.document.clone();
        let mut client = document.client();
        let mut held = document.grant_lease().await?;
        let lease = held.id;
        // The name is the node's only while its previous lease (a restart
        // within the TTL) or another node with the same name does not hold it.
        let node_key = self.node_key(&self.record.name);
        let record = serde_json::to_string(&self.record).expect("a node record serializes");
        let claim = Txn::new()
            .when([Compare::create_revision(
                node_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                node_key.as_str(),
                record,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if !self.document.call(client.txn(claim)).await?.succeeded() {
            let _ = client.lease_revoke(lease).await;
            return Err(self.document.watch_ended(format!(
                "node name `{}` is registered by another gateway (or by this one before a restart, until its lease runs out)",
                self.record.name
            )));
        }
        log::info!(
            "fleet node {} registered (lease {lease:x}, TTL {:?})",
            self.record.name,
            document.lease_ttl()
        );
        let prefix = self.replicas_prefix();
        let listed = self
            .document
            .call(client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
            .await?;
        self.remote.clear();
        for kv in listed.kvs() {
            self.record_put(kv.key());
        }
        let from = listed.header().map_or(0, |h| h.revision()) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch = self
            .document
            .call(client.watch(prefix.as_str(), Some(options)))
            .await?;
        self.sync(&mut client, lease).await?;
        let mut renew = held.renewals();
        let mut sync = tokio::time::interval(SYNC_EVERY);
        loop {
            tokio::select! {
                _ = renew.tick() => held.renew(&document).await?,
                _ = sync.tick() => self.sync(&mut client, lease).await?,
                response = document.next(&mut watch) => {
                    for event in response?.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => self.record_put(kv.key()),
                            EventType::Delete => self.record_delete(kv.key()),
                        }
                    }
                    self.apply_remote();
                }
            }
        }
    }

    /// Publishes this node's replicas that are new, withdraws those gone,
    /// and puts other nodes' replicas in pools a config change created.
    async fn sync(
        &mut self,
        client: &mut etcd_client::Client,
        lease: i64,
    ) -> Result<(), FleetError> {
        let local = self.local_replicas();
        let new: Vec<_> = local.difference(&self.published).cloned().collect();
        let gone: Vec<_> = self.published.difference(&local).cloned().collect();
        for (deployment, addr) in new {
            let key = self.replica_key(&deployment, addr);
            let value =
                serde_json::json!({ "node": self.record.name, "address": addr }).to_string();
            let options = PutOptions::new().with_lease(lease);
            self.document
                .call(client.put(key, value, Some(options)))
                .await?;
            log::info!(
                "fleet: published replica {addr} of {}/{}",
                deployment.0,
                deployment.1
            );
            self.published.insert((deployment, addr));
        }
        for (deployment, addr) in gone {
            let key = self.replica_key(&deployment, addr);
            self.document.call(client.delete(key, None)).await?;
            log::info!(
                "fleet: withdrew replica {addr} of {}/{}",
                deployment.0,
                deployment.1
            );
            self.published.remove(&(deployment, addr));
        }
        self.apply_remote();
        self.publish_load(client, lease).await
    }

    /// Publishes this node's load when it changed, at most every
    /// [`LOAD_EVERY`], but at once when requests newly park.
    async fn publish_load(
        &mut self,
        client: &mut etcd_client::Client,
        lease: i64,
    ) -> Result<(), FleetError> {
        let load = self.local_load();
        let now = tokio::time::Instant::now();
        let due = match &self.load {
            None => true,
            Some((before, _)) if load.newly_parked(before) => true,
            Some((before, at)) => *before != load && now.duration_since(*at) >= LOAD_EVERY,
        };
        if !due {
            return Ok(());
        }
        let key = format!(
            "{}{}",
            load_prefix(self.document.prefix()),
            self.record.name
        );
        let value = serde_json::to_string(&load).expect("a load record serializes");
        let options = PutOptions::new().with_lease(lease);
        self.document
            .call(client.put(key, value, Some(options)))
            .await?;
        self.load = Some((load, now));
        Ok(())
    }

    /// In flight plus parked per local deployment, and each rollout's
    /// per-side counts, on this node.
    fn local_load(&self) -> NodeLoad {
        let snapshot = self.routing.load();
        let mut load = NodeLoad::default();
        for (key, pool) in local_pools(snapshot.config(), &snapshot) {
            let parked = pool.parked() as u32;
            let concurrency = pool.in_flight() as u32 + parked;
            if concurrency > 0 {
                load.deployments.insert(
                    deployment_name(&key),
                    DeploymentLoad {
                        concurrency,
                        parked,
                    },
                );
            }
        }
        for model in &snapshot.config().models {
            let Ok(routes) = snapshot.model(&model.id) else {
                continue;
            };
            for env in model.environments.iter().filter(|e| e.rollout.is_some()) {
                let Some(rollout) = routes
                    .environment_route(&env.name)
                    .and_then(|e| e.rollout())
                else {
                    continue;
                };
                let (stage, stable, canary) = rollout.state().stats().counts();
                if stable.requests + canary.requests > 0 {
                    let counts = RolloutCounts {
                        stage,
                        stable: stable.into(),
                        canary: canary.into(),
                    };
                    load.rollouts
                        .insert(format!("{}/{}", model.id, env.name), counts);
                }
            }
        }
        load
    }

    /// This node's ready replicas of local deployments: what its
    /// controller put in their pools.
    fn local_replicas(&self) -> HashSet<(DeploymentKey, SocketAddr)> {
        let snapshot = self.routing.load();
        let mut local = HashSet::new();
        for (key, pool) in local_pools(snapshot.config(), &snapshot) {
            let ours = self.added.get(&key);
            for replica in pool.replicas().replicas() {
                let added = ours.is_some_and(|(_, r)| r.values().any(|a| Arc::ptr_eq(a, replica)));
                if !added {
                    local.insert((key.clone(), replica.addr()));
                }
            }
        }
        local
    }

    /// Makes each local deployment's pool hold exactly the other nodes'
    /// replicas etcd lists (besides this node's own).
    fn apply_remote(&mut self) {
        let snapshot = self.routing.load();
        let pools: HashMap<DeploymentKey, Arc<Pool>> =
            local_pools(snapshot.config(), &snapshot).collect();
        // Out first: replicas no longer listed, and pools replaced.
        self.added.retain(|key, (pool, replicas)| {
            let current = pools.get(key).filter(|p| Arc::ptr_eq(p, pool));
            let listed = self.remote.get(key);
            replicas.retain(|addr, replica| {
                let keep = current.is_some() && listed.is_some_and(|l| l.contains_key(addr));
                if !keep {
                    pool.remove_replica(replica);
                }
                keep
            });
            current.is_some() && !replicas.is_empty()
        });
        for (key, listed) in &self.remote {
            let Some(pool) = pools.get(key) else { continue };
            let (_, replicas) = self
                .added
                .entry(key.clone())
                .or_insert_with(|| (Arc::clone(pool), HashMap::new()));
            for addr in listed.keys() {
                replicas.entry(*addr).or_insert_with(|| {
                    let replica = Arc::new(Replica::elsewhere(*addr));
                    pool.add_replica(Arc::clone(&replica));
                    replica
                });
            }
        }
    }

    fn record_put(&mut self, key: &[u8]) {
        if let Some((deployment, node, addr)) = self.parse_replica_key(key)
            && node != self.record.name
        {
            self.remote
                .entry(deployment)
                .or_default()
                .insert(addr, node);
        }
    }

    fn record_delete(&mut self, key: &[u8]) {
        if let Some((deployment, _, addr)) = self.parse_replica_key(key)
            && let Some(listed) = self.remote.get_mut(&deployment)
        {
            listed.remove(&addr);
        }
    }

    /// `replicas/MODEL/DEPLOYMENT/NODE/ADDRESS` into its parts.
    fn parse_replica_key(&self, key: &[u8]) -> Option<(DeploymentKey, String, SocketAddr)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.replicas_prefix())?;
        let mut parts = rest.splitn(4, '/');
        let (model, deployment, node, addr) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let addr = addr.parse().ok()?;
        Some((
            (model.to_owned(), deployment.to_owned()),
            node.to_owned(),
            addr,
        ))
    }
}

/// The pools of deployments whose replicas the gateways start themselves.
pub(super) fn local_pools<'a>(
    config: &'a Config,
    snapshot: &'a routing::Snapshot,
) -> impl Iterator<Item = (DeploymentKey, Arc<Pool>)> + 'a {
    config.models.iter().flat_map(move |model| {
        model
            .deployments
            .iter()
            .filter(|d| d.replicas == ReplicaSource::Local)
            .filter_map(move |d| {
                let route = snapshot.deployment(&model.id, &d.id)?;
                Some(((model.id.clone(), d.id.clone()), Arc::clone(route.pool())))
            })
    })
}
