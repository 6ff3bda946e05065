//! Building a snapshot from a config, as a pure function of the config and
//! the previous snapshot (vector's diff, then apply).
//!
//! A new snapshot shares state with the one it replaces: the pools of the
//! deployments still there (replicas, in-flight counts, parked requests),
//! the parked-bytes budget, rollout states, recent stats and metric
//! handles. Building reads that state and never writes it: what the new
//! config changes in it is returned as a list of [`Effect`]s, which
//! [`Routing::publish`](crate::Routing::publish) applies around its store.
//! Pools created for new deployments are not shared yet, so they are set up
//! in full here.

use std::collections::HashMap;
use std::sync::Arc;

use config::{
    Config, Deployment, DeploymentKind, OutlierDetection, QueueSettings, ReplicaSource, RetryPolicy,
};
use http::HeaderValue;

use super::{DeploymentRoute, EnvironmentRoute, ModelRoutes, RolloutRoute, Snapshot};
use crate::auth::KeyTable;
use crate::pool::{ParkedBytes, Pool, ScaleSignal};
use crate::replicas::{Replica, ReplicaSet};
use crate::telemetry::RouteMetrics;

impl Snapshot {
    /// The first snapshot for `config`: every pool, budget and handle new.
    pub fn new(config: &Config) -> Self {
        let update = build(config, None);
        debug_assert!(update.effects.is_empty(), "nothing shared yet");
        update.snapshot
    }

    /// The snapshot for `config` that replaces `previous`, keeping its
    /// pools for the deployments that are still there, and its rollout
    /// states, recent stats and metric handles. Fixed (`static`) replicas
    /// are compared here: a replica whose address stays keeps its state.
    ///
    /// Changes nothing `previous` routes to: the pools' new settings and
    /// replicas, and the closing of the pools of deactivated or deleted
    /// deployments, are the update's [`effects`](Update::effects), applied
    /// when it is published.
    pub fn rebuild(config: &Config, previous: &Snapshot) -> Update {
        build(config, Some(previous))
    }
}

/// A snapshot ready to publish, and what publishing it changes in the state
/// it shares with the snapshot it replaces.
#[derive(Debug)]
#[must_use = "an update does nothing until it is published (Routing::publish)"]
pub struct Update {
    snapshot: Snapshot,
    effects: Vec<Effect>,
}

impl Update {
    /// The new snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// What publishing it changes, in the order it is applied.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    pub(crate) fn into_parts(self) -> (Snapshot, Vec<Effect>) {
        (self.snapshot, self.effects)
    }
}

/// One change a new config makes to state that the current snapshot
/// shares with the new one.
#[derive(Debug)]
pub enum Effect {
    /// `[server] max_parked_bytes` changed.
    SetMaxParkedBytes {
        /// The budget all pools share.
        parked_bytes: Arc<ParkedBytes>,
        /// The new budget.
        max_bytes: u64,
    },
    /// A kept deployment's settings (applied on every rebuild, changed or
    /// not, as a reload always did).
    Configure {
        /// Its pool.
        pool: Arc<Pool>,
        /// `predict_concurrency`.
        limit: u32,
        /// Its activation queue.
        queue: QueueSettings,
        /// When its traffic ejects a replica.
        outlier_detection: OutlierDetection,
        /// When a failed attempt is tried again.
        retry: RetryPolicy,
    },
    /// A kept deployment's fixed replicas changed.
    SetReplicas {
        /// Its pool.
        pool: Arc<Pool>,
        /// The new set, sharing the replicas whose address stays.
        set: ReplicaSet,
    },
    /// A deployment is inactive or was deleted: its parked requests fail
    /// now rather than at their queue timeout.
    Close(Arc<Pool>),
}

impl Effect {
    /// Whether it waits until the new snapshot is published. Closing does:
    /// until then the current snapshot may still send requests to the pool,
    /// and they would park on a closed pool and wait out their timeout.
    /// The rest is applied before: the pool is the same in both snapshots,
    /// so the old one loses nothing by it, and the first request the new
    /// one routes (say, to a deployment just activated) meets the new
    /// settings and replicas.
    pub(crate) fn after_store(&self) -> bool {
        matches!(self, Self::Close(_))
    }

    pub(crate) fn apply(self) {
        match self {
            Self::SetMaxParkedBytes {
                parked_bytes,
                max_bytes,
            } => parked_bytes.set_max_bytes(max_bytes),
            Self::Configure {
                pool,
                limit,
                queue,
                outlier_detection,
                retry,
            } => pool.configure(limit, queue, outlier_detection, retry),
            Self::SetReplicas { pool, set } => pool.set_replicas(set),
            Self::Close(pool) => pool.close(),
        }
    }
}

fn build(config: &Config, previous: Option<&Snapshot>) -> Update {
    let mut effects = Vec::new();
    let max_bytes = config.server.max_parked_bytes;
    let (parked_bytes, scale_signal) = match previous {
        None => (Arc::new(ParkedBytes::new(max_bytes)), Arc::default()),
        Some(p) => {
            if p.config.server.max_parked_bytes != max_bytes {
                effects.push(Effect::SetMaxParkedBytes {
                    parked_bytes: Arc::clone(&p.parked_bytes),
                    max_bytes,
                });
            }
            (Arc::clone(&p.parked_bytes), Arc::clone(&p.scale_signal))
        }
    };
    let shared = (&parked_bytes, &scale_signal);
    let mut models = HashMap::with_capacity(config.models.len());
    for model in &config.models {
        let old = previous.and_then(|p| p.models.get(model.id.as_str()));
        let mut deployments = HashMap::with_capacity(model.deployments.len());
        let mut development = None;
        for d in &model.deployments {
            let old_route = old.and_then(|o| o.deployments.get(d.id.as_str()));
            let route = deployment_route(&model.id, d, old_route, shared, &mut effects);
            if d.kind == DeploymentKind::Development {
                development = Some(Arc::clone(&route));
            }
            deployments.insert(d.id.as_str().into(), route);
        }
        let environments: HashMap<Box<str>, Option<Arc<EnvironmentRoute>>> = model
            .environments
            .iter()
            .map(|e| {
                let old_env = old.and_then(|o| o.environments.get(e.name.as_str())?.as_ref());
                let route = environment_route(&model.id, e, &deployments, old_env);
                (e.name.as_str().into(), route)
            })
            .collect();
        let production = environments.get(config::PRODUCTION).cloned().flatten();
        models.insert(
            model.id.as_str().into(),
            ModelRoutes {
                deployments,
                environments,
                production,
                development,
            },
        );
    }
    // Parked requests of deleted deployments fail once the new snapshot no
    // longer routes to them, not at their timeout.
    if let Some(previous) = previous {
        for (model_id, routes) in &previous.models {
            for (id, route) in &routes.deployments {
                let kept = models
                    .get(model_id)
                    .is_some_and(|m: &ModelRoutes| m.deployments.contains_key(id));
                if !kept {
                    effects.push(Effect::Close(Arc::clone(&route.pool)));
                }
            }
        }
    }
    let unrouted = previous.map_or_else(
        || Arc::new(RouteMetrics::new("", "", "", None, None)),
        |p| Arc::clone(&p.unrouted),
    );
    Update {
        snapshot: Snapshot {
            models,
            keys: KeyTable::new(&config.api_keys),
            config: Arc::new(config.clone()),
            parked_bytes,
            scale_signal,
            unrouted,
        },
        effects,
    }
}

/// A deployment's route, keeping the pool, recent stats and metric handles
/// of `old`. A kept pool's new settings and replicas go to `effects`, and
/// so does closing it if the deployment is inactive.
fn deployment_route(
    model_id: &str,
    d: &Deployment,
    old: Option<&Arc<DeploymentRoute>>,
    (parked_bytes, scale_signal): (&Arc<ParkedBytes>, &Arc<ScaleSignal>),
    effects: &mut Vec<Effect>,
) -> Arc<DeploymentRoute> {
    let pool = match old {
        Some(route) => {
            let pool = Arc::clone(&route.pool);
            effects.push(Effect::Configure {
                pool: Arc::clone(&pool),
                limit: d.predict_concurrency,
                queue: d.queue,
                outlier_detection: d.outlier_detection,
                retry: d.retry,
            });
            if let ReplicaSource::Static { addresses } = &d.replicas {
                let current = pool.replicas();
                if !same_addresses(&current, addresses) {
                    effects.push(Effect::SetReplicas {
                        pool: Arc::clone(&pool),
                        set: static_set(&current, addresses),
                    });
                }
            }
            if !d.active {
                effects.push(Effect::Close(Arc::clone(&pool)));
            }
            pool
        }
        // Not shared with any snapshot yet: set it up now. Nothing can have
        // parked on it, so an inactive one needs no closing.
        None => {
            let pool = Arc::new(Pool::new(
                d.predict_concurrency,
                d.queue,
                Arc::clone(parked_bytes),
                Arc::clone(scale_signal),
            ));
            pool.configure(d.predict_concurrency, d.queue, d.outlier_detection, d.retry);
            if let ReplicaSource::Static { addresses } = &d.replicas {
                pool.set_replicas(ReplicaSet::new(addresses));
            }
            pool
        }
    };
    let recent = old.map_or_else(Arc::default, |r| Arc::clone(&r.recent));
    let metrics = RouteMetrics::reuse_or_new(
        old.map(|r| &r.metrics),
        model_id,
        "",
        &d.id,
        Some(&recent),
        None,
    );
    Arc::new(DeploymentRoute {
        id: d.id.as_str().into(),
        id_header: HeaderValue::from_str(&d.id).expect("validated ids are header-safe"),
        active: d.active,
        pool,
        recent,
        metrics,
        max_request_body_bytes: d.max_request_body_bytes,
        sync_routes: d.sync_routes.clone(),
    })
}

/// An environment's route (none until a deployment is promoted into it),
/// keeping the recent stats, metric handles and rollout state of `old`.
fn environment_route(
    model_id: &str,
    e: &config::Environment,
    deployments: &HashMap<Box<str>, Arc<DeploymentRoute>>,
    old: Option<&Arc<EnvironmentRoute>>,
) -> Option<Arc<EnvironmentRoute>> {
    let stable = deployments.get(e.deployment.as_deref()?)?;
    let recent = old.map_or_else(Arc::default, |o| Arc::clone(&o.recent));
    let metrics = |old: Option<&Arc<RouteMetrics>>, d: &DeploymentRoute| {
        RouteMetrics::reuse_or_new(
            old,
            model_id,
            &e.name,
            &d.id,
            Some(&d.recent),
            Some(&recent),
        )
    };
    let rollout = e.rollout.as_ref().and_then(|r| {
        let canary = deployments.get(r.deployment.as_str())?;
        let old_rollout = old.and_then(|o| o.rollout.as_ref());
        let metrics = metrics(old_rollout.map(|o| &o.metrics), canary);
        Some(rollout_route(r, canary, old_rollout, metrics))
    });
    let metrics = metrics(old.map(|o| &o.metrics), stable);
    Some(Arc::new(EnvironmentRoute {
        stable: Arc::clone(stable),
        rollout,
        recent,
        metrics,
    }))
}

/// A rollout's route, keeping the state of the same rollout (same
/// canary, same start) from the previous snapshot.
fn rollout_route(
    r: &config::Rollout,
    canary: &Arc<DeploymentRoute>,
    old: Option<&RolloutRoute>,
    metrics: Arc<RouteMetrics>,
) -> RolloutRoute {
    let state = old
        .filter(|o| o.canary.id == canary.id && o.rollout.started_at_ms == r.started_at_ms)
        .map_or_else(Arc::default, |o| Arc::clone(&o.state));
    RolloutRoute {
        canary: Arc::clone(canary),
        metrics,
        rollout: r.clone(),
        state,
    }
}

/// Whether `set` holds exactly these addresses, in this order.
fn same_addresses(set: &ReplicaSet, addrs: &[std::net::SocketAddr]) -> bool {
    set.len() == addrs.len()
        && set
            .replicas()
            .iter()
            .zip(addrs)
            .all(|(r, a)| r.addr() == *a)
}

/// The replicas for fixed `addrs`, keeping those of `current` whose address stays.
fn static_set(current: &ReplicaSet, addrs: &[std::net::SocketAddr]) -> ReplicaSet {
    ReplicaSet::from_replicas(
        addrs
            .iter()
            .map(|&addr| {
                current
                    .replicas()
                    .iter()
                    .find(|r| r.addr() == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Replica::new(addr)))
            })
            .collect(),
    )
}
