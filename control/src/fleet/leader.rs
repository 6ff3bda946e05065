//! The fleet's leader: one node, elected through etcd, sums every node's
//! load per local deployment, runs the [`Autoscaler`] on it, and writes how
//! many replicas each node runs ([`super::placement`]). Every node runs
//! this loop; the one whose key `PREFIX/leader` holds leads, under a lease
//! of its own: if it dies, the key goes with its lease and the others
//! campaign at once.
//!
//! Placement spreads a deployment's replicas across the live nodes (fewest
//! replicas of it first, then most free declared CPU), keeps replicas where
//! they are when the count does not change, and moves those of a node that
//! left. Each write is fenced: it lands only while this node's leader key
//! is the one in etcd.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, DeploymentKind};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use routing::Routing;
use tokio::time::Instant;

use super::FleetConfig;
use super::document::{Backoff, FleetError, Lease, SharedDocument};
use super::load::{NodeLoad, deployment_name, load_prefix};
use super::placement::{DeploymentPlacement, placement_key, placement_prefix};
use super::registry::NodeRecord;
use crate::autoscaler::Autoscaler;
use crate::plane::ShutdownSignal;
use crate::scaling::effective_autoscaling;

/// How often the leader samples the fleet's load and decides.
const TICK: Duration = Duration::from_secs(1);

type DeploymentKey = (String, String);

/// Campaigns for leadership and, while leading, scales the fleet.
#[derive(Debug)]
pub struct Leader {
    document: SharedDocument,
    routing: Arc<Routing>,
    fleet: Arc<FleetConfig>,
    node: String,
}

/// The leader's state while it leads.
struct Term {
    /// The leader key's create revision: writes are fenced on it.
    fence: i64,
    epoch: Instant,
    nodes: BTreeMap<String, NodeRecord>,
    loads: BTreeMap<String, NodeLoad>,
    placements: HashMap<DeploymentKey, DeploymentPlacement>,
    autoscalers: HashMap<DeploymentKey, (config::Autoscaling, Autoscaler)>,
}

impl Leader {
    /// The loop of node `node`, which reads its config from `routing` and
    /// shows who leads through `fleet`.
    pub fn new(
        document: SharedDocument,
        routing: Arc<Routing>,
        fleet: Arc<FleetConfig>,
        node: &str,
    ) -> Self {
        Self {
            document,
            routing,
            fleet,
            node: node.to_owned(),
        }
    }

    /// Campaigns, leads while it can, campaigns again; until shutdown.
    pub async fn run(self, mut shutdown: ShutdownSignal) {
        let mut backoff = Backoff::default();
        loop {
            let error = tokio::select! {
                error = self.campaign() => error,
                () = shutdown.requested() => return,
            };
            self.fleet.set_leader(None);
            log::warn!(
                "fleet node {}: leadership loop: {error}; campaigning again",
                self.node
            );
            if !backoff.wait(&mut shutdown).await {
                return;
            }
        }
    }

    fn key(&self) -> String {
        format!("{}/leader", self.document.prefix())
    }

    async fn campaign(&self) -> FleetError {
        match self.campaign_inner().await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn campaign_inner(&self) -> Result<std::convert::Infallible, FleetError> {
        let document = &self.document;
        let mut client = document.client();
        let mut lease = document.grant_lease().await?;
        let mut renew = lease.renewals();
        let key = self.key();
        loop {
            let claim = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    self.node.as_str(),
                    Some(PutOptions::new().with_lease(lease.id)),
                )])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let claimed = document.call(client.txn(claim)).await?;
            let revision = claimed.header().map_or(0, |h| h.revision());
            if claimed.succeeded() {
                log::info!("fleet node {} leads (lease {:x})", self.node, lease.id);
                self.fleet.set_leader(Some(self.node.clone()));
                return self
                    .lead(&mut client, revision, &mut lease, &mut renew)
                    .await;
            }
            // Follow: note who leads, and campaign again once its key goes.
            let holder = current_holder(&claimed);
            self.fleet.set_leader(holder.clone());
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let mut watch = document
                .call(client.watch(key.as_str(), Some(options)))
                .await?;
            loop {
                tokio::select! {
                    _ = renew.tick() => lease.renew(document).await?,
                    response = document.next(&mut watch) => {
                        if response?.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            log::info!("fleet leader {} is gone; campaigning", holder.as_deref().unwrap_or("?"));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Leads until the lease or etcd is lost.
    async fn lead(
        &self,
        client: &mut etcd_client::Client,
        fence: i64,
        lease: &mut Lease,
        renew: &mut tokio::time::Interval,
    ) -> Result<std::convert::Infallible, FleetError> {
        let document = &self.document;
        let prefix = format!("{}/", document.prefix());
        let listed = document
            .call(client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut term = Term {
            fence,
            epoch: Instant::now(),
            nodes: BTreeMap::new(),
            loads: BTreeMap::new(),
            placements: HashMap::new(),
            autoscalers: HashMap::new(),
        };
        for kv in listed.kvs() {
            term.record(document.prefix(), kv.key(), Some(kv.value()));
        }
        let from = listed.header().map_or(0, |h| h.revision()) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut watch = document
            .call(client.watch(prefix.as_str(), Some(options)))
            .await?;
        let mut tick = tokio::time::interval(TICK);
        loop {
            let sample = tokio::select! {
                _ = renew.tick() => {
                    lease.renew(document).await?;
                    continue;
                }
                _ = tick.tick() => true,
                response = document.next(&mut watch) => {
                    let mut parked = false;
                    for event in response?.events() {
                        let Some(kv) = event.kv() else { continue };
                        let value = (event.event_type() == EventType::Put).then(|| kv.value());
                        parked |= term.record(document.prefix(), kv.key(), value);
                    }
                    // Newly parked requests are decided on at once (a
                    // scale from zero); other changes wait for the tick.
                    if !parked {
                        continue;
                    }
                    false
                }
            };
            let config = Arc::clone(self.routing.load().config());
            for (key, placement) in term.decide(&config, sample) {
                let value = serde_json::to_string(&placement).expect("a placement serializes");
                let put = Txn::new()
                    .when([Compare::create_revision(
                        self.key(),
                        CompareOp::Equal,
                        term.fence,
                    )])
                    .and_then([TxnOp::put(
                        placement_key(document.prefix(), &key),
                        value,
                        None,
                    )]);
                if !document.call(client.txn(put)).await?.succeeded() {
                    return Err(document.watch_ended("leadership lost"));
                }
                log::info!(
                    "fleet leader: {}/{} -> {} replica(s) {:?}",
                    key.0,
                    key.1,
                    placement.desired,
                    placement.nodes
                );
                term.placements.insert(key, placement);
            }
        }
    }
}

/// Who holds the leader key, from a failed claim's `get`.
fn current_holder(response: &etcd_client::TxnResponse) -> Option<String> {
    response.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_owned)),
        _ => None,
    })
}

impl Term {
    /// Takes in one key of the fleet's prefix (`value` `None`: deleted).
    /// Whether it brought newly parked requests.
    fn record(&mut self, prefix: &str, key: &[u8], value: Option<&[u8]>) -> bool {
        let Ok(key) = std::str::from_utf8(key) else {
            return false;
        };
        let Some(rest) = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/')) else {
            return false;
        };
        if let Some(node) = rest.strip_prefix("nodes/") {
            match value.map(serde_json::from_slice::<NodeRecord>) {
                Some(Ok(record)) => {
                    self.nodes.insert(node.to_owned(), record);
                }
                Some(Err(_)) => {}
                None => {
                    self.nodes.remove(node);
                }
            }
        } else if let Some(node) = rest.strip_prefix(load_prefix("").trim_start_matches('/')) {
            match value.map(serde_json::from_slice::<NodeLoad>) {
                Some(Ok(load)) => {
                    let before = self.loads.insert(node.to_owned(), load.clone());
                    return load.newly_parked(&before.unwrap_or_default());
                }
                Some(Err(_)) => {}
                None => {
                    self.loads.remove(node);
                }
            }
        } else if let Some(deployment) =
            rest.strip_prefix(placement_prefix("").trim_start_matches('/'))
            && let Some((model, deployment)) = deployment.split_once('/')
        {
            let key = (model.to_owned(), deployment.to_owned());
            match value.map(serde_json::from_slice::<DeploymentPlacement>) {
                Some(Ok(placement)) => {
                    self.placements.insert(key, placement);
                }
                Some(Err(_)) => {}
                None => {
                    self.placements.remove(&key);
                }
            }
        }
        false
    }

    /// Runs each local deployment's autoscaler on the fleet's load and
    /// returns the placements that change.
    fn decide(
        &mut self,
        config: &Config,
        sample: bool,
    ) -> Vec<(DeploymentKey, DeploymentPlacement)> {
        let t = Instant::now().duration_since(self.epoch);
        let mut changed = Vec::new();
        for model in &config.models {
            for d in model
                .deployments
                .iter()
                .filter(|d| d.replicas == config::ReplicaSource::Local && d.engine.is_some())
            {
                let key = (model.id.clone(), d.id.clone());
                let name = deployment_name(&key);
                let (concurrency, parked) = self
                    .loads
                    .values()
                    .filter_map(|l| l.deployments.get(&name))
                    .fold((0u32, 0u32), |(c, p), l| (c + l.concurrency, p + l.parked));
                let settings = effective_autoscaling(model, d);
                let development = d.kind == DeploymentKind::Development;
                let (_, autoscaler) = self
                    .autoscalers
                    .entry(key.clone())
                    .and_modify(|(s, a)| {
                        if *s != settings {
                            (*s, *a) = (settings, Autoscaler::new(settings, development));
                        }
                    })
                    .or_insert_with(|| (settings, Autoscaler::new(settings, development)));
                if sample {
                    autoscaler.observe(t, f64::from(concurrency));
                }
                let previous = self.placements.get(&key).cloned().unwrap_or_default();
                let current: u32 = previous
                    .nodes
                    .iter()
                    .filter(|(node, _)| self.nodes.contains_key(*node))
                    .map(|(_, n)| n)
                    .sum();
                let mut desired = autoscaler.decide(t, current).desired;
                if parked > 0 && current == 0 {
                    desired = desired.max(1); // scale from zero at once
                }
                if !d.active {
                    desired = 0;
                }
                let placement = place(&previous, desired, &self.nodes);
                if placement != previous {
                    changed.push((key, placement));
                }
            }
        }
        changed
    }
}

/// Spreads `desired` replicas over the live `nodes`, starting from
/// `previous`: replicas stay where they are when they can; a node that
/// left loses its own; new ones go to the node with fewest of them, then
/// the most declared CPU, then by name; removals come from the node with
/// most.
fn place(
    previous: &DeploymentPlacement,
    desired: u32,
    nodes: &BTreeMap<String, NodeRecord>,
) -> DeploymentPlacement {
    let mut counts: BTreeMap<String, u32> = previous
        .nodes
        .iter()
        .filter(|(node, n)| nodes.contains_key(*node) && **n > 0)
        .map(|(node, n)| (node.clone(), *n))
        .collect();
    let cpu = |node: &str| nodes.get(node).and_then(|r| r.cpu_millis).unwrap_or(0);
    let mut total: u32 = counts.values().sum();
    while total > desired {
        let most = counts
            .iter()
            .max_by_key(|(node, n)| (**n, std::cmp::Reverse(cpu(node))))
            .map(|(node, _)| node.clone())
            .expect("a positive total has a node");
        let n = counts.get_mut(&most).expect("just found");
        *n -= 1;
        if *n == 0 {
            counts.remove(&most);
        }
        total -= 1;
    }
    while total < desired && !nodes.is_empty() {
        let fewest = nodes
            .keys()
            .min_by_key(|node| {
                (
                    counts.get(*node).copied().unwrap_or(0),
                    std::cmp::Reverse(cpu(node)),
                )
            })
            .expect("not empty")
            .clone();
        *counts.entry(fewest).or_default() += 1;
        total += 1;
    }
    DeploymentPlacement {
        desired,
        nodes: counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[(&str, Option<u32>)]) -> BTreeMap<String, NodeRecord> {
        names
            .iter()
            .map(|(name, cpu)| {
                let record = NodeRecord {
                    name: (*name).to_owned(),
                    predict: "127.0.0.1:1".parse().unwrap(),
                    admin: "127.0.0.1:2".parse().unwrap(),
                    cpu_millis: *cpu,
                    memory_mib: None,
                };
                ((*name).to_owned(), record)
            })
            .collect()
    }

    fn counts(placement: &DeploymentPlacement) -> Vec<(&str, u32)> {
        placement
            .nodes
            .iter()
            .map(|(n, c)| (n.as_str(), *c))
            .collect()
    }

    #[test]
    fn replicas_spread_over_nodes_and_stay_where_they_are() {
        let three = nodes(&[("a", None), ("b", None), ("c", None)]);
        let two = place(&DeploymentPlacement::default(), 2, &three);
        assert_eq!(counts(&two), [("a", 1), ("b", 1)]);
        let four = place(&two, 4, &three);
        assert_eq!(counts(&four), [("a", 2), ("b", 1), ("c", 1)]);
        // Down again: from the node with most.
        assert_eq!(
            counts(&place(&four, 3, &three)),
            [("a", 1), ("b", 1), ("c", 1)]
        );
        // Same count: nothing moves.
        assert_eq!(place(&two, 2, &three), two);
        assert_eq!(place(&two, 0, &three).nodes.len(), 0);
    }

    #[test]
    fn a_node_that_left_loses_its_replicas_to_the_others() {
        let three = nodes(&[("a", None), ("b", None), ("c", None)]);
        let placed = place(&DeploymentPlacement::default(), 2, &three);
        let without_a = nodes(&[("b", None), ("c", None)]);
        assert_eq!(counts(&place(&placed, 2, &without_a)), [("b", 1), ("c", 1)]);
        assert_eq!(place(&placed, 2, &BTreeMap::new()).nodes.len(), 0);
    }

    #[test]
    fn ties_go_to_the_node_with_more_declared_cpu() {
        let unequal = nodes(&[("a", Some(2000)), ("b", Some(8000))]);
        assert_eq!(
            counts(&place(&DeploymentPlacement::default(), 1, &unequal)),
            [("b", 1)]
        );
        assert_eq!(
            counts(&place(&DeploymentPlacement::default(), 3, &unequal)),
            [("a", 1), ("b", 2)]
        );
    }
}
