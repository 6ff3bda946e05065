//! The scaling controller: one loop that owns every local replica. It wakes
//! every tick (to sample load and let the autoscaler decide), when a request
//! parks at a deployment without routable replicas or a wake call comes (to
//! start one at once), when a replica changes state, and when the config
//! changes. Each pass reconciles every local deployment:
//!
//! 1. follow its replicas: one that became ready joins routing; one that
//!    exited unexpectedly leaves routing at once and is replaced after a
//!    backoff;
//! 2. decide how many it should run ([`Autoscaler`], plus: at least one
//!    while requests are parked, or as many as a wake asked for; none while
//!    inactive);
//! 3. start what is missing if the node has room (else they stay pending,
//!    with the reason in the deployment's status), or drain and stop what is
//!    too many: taken out of routing first, stopped once its requests are
//!    done. A replica still starting is never stopped for being idle.
//!
//! Time is Tokio's clock, so tests can pause and advance it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use config::{Autoscaling, Deployment, DeploymentKind, Model, ReplicaSource, Resources};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::autoscaler::Autoscaler;
use crate::capacity::{NodeCapacity, Usage};
use crate::fleet::{Placed, Placement};
use crate::plane::ShutdownSignal;
use crate::provision::{Instance, InstanceState, Provisioner, Released, ReplicaSpec};
use routing::Routing;
use routing::pool::{PendingReason, Pool, ScaleStatus};
use routing::replicas::Replica;
use routing::telemetry;

/// Timing of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingSettings {
    /// How often load is sampled and the autoscaler decides.
    pub tick: Duration,
    /// Longest a replica being scaled down may take to finish its requests.
    pub drain_timeout: Duration,
    /// First wait before replacing a crashed replica; doubles per crash.
    pub restart_backoff: Duration,
    /// Longest wait before replacing a crashed replica.
    pub max_restart_backoff: Duration,
    /// A replica that ran this long resets the backoff when it crashes.
    pub stable_after: Duration,
    /// A running replica that fails its readiness probes this long (hung,
    /// or lost its model) is stopped and replaced.
    pub unready_timeout: Duration,
    /// Consecutive failed starts after which a deployment is marked failed
    /// (`[server] max_failed_starts`).
    pub max_failed_starts: u32,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(60),
            restart_backoff: Duration::from_millis(500),
            max_restart_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            unready_timeout: Duration::from_secs(30),
            max_failed_starts: 5,
        }
    }
}

/// The settings that govern a deployment: those of an environment that
/// serves it (they apply once a promotion into it succeeded), else its own.
pub fn effective_autoscaling(m: &Model, d: &Deployment) -> Autoscaling {
    m.environments
        .iter()
        .filter(|e| e.deployment.as_deref() == Some(d.id.as_str()))
        .find_map(|e| e.autoscaling)
        .unwrap_or(d.autoscaling)
}

/// One replica the controller started.
struct LocalReplica {
    instance: Arc<Instance>,
    /// Set once it is ready and in routing.
    replica: Option<Arc<Replica>>,
    resources: Resources,
    /// When the controller decided to start it.
    started: Instant,
    running_since: Option<Instant>,
    /// Since when its readiness probes have been failing.
    unready_since: Option<Instant>,
    /// Being drained and stopped on purpose.
    stopping: bool,
    /// Taken over from the previous gateway (no cold start).
    adopted: bool,
    /// Handed over to the next gateway: never stopped by this one.
    handed: bool,
}

/// What governs a deployment's autoscaler: its effective settings, and
/// whether it is a development deployment (at most one replica).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Policy {
    autoscaling: Autoscaling,
    development: bool,
}

impl Policy {
    fn of(model: &Model, d: &Deployment) -> Self {
        Self {
            autoscaling: effective_autoscaling(model, d),
            development: d.kind == DeploymentKind::Development,
        }
    }

    /// A fresh autoscaler under this policy.
    fn autoscaler(self) -> Autoscaler {
        Autoscaler::new(self.autoscaling, self.development)
    }
}

/// A local deployment's replicas and scaling state.
struct LocalDeployment {
    name: String,
    pool: Arc<Pool>,
    policy: Policy,
    autoscaler: Autoscaler,
    replicas: Vec<LocalReplica>,
    crashes: u64,
    backoff: Duration,
    restart_not_before: Option<Instant>,
    last_desired: Option<u32>,
    last_pending: Option<PendingReason>,
    /// Replicas that exited before they were ever ready, in a row.
    failed_starts: u32,
    /// Why the last one did, in its own words.
    last_error: Option<String>,
    /// Set when it gave up starting replicas: the config it gave up on (a
    /// different one tries again).
    failed_with: Option<Deployment>,
    /// Decision-to-ready time of its replicas.
    cold_start: metrics::Histogram,
}

impl LocalReplica {
    /// A replica just started (or adopted) at `now`.
    fn new(instance: Arc<Instance>, resources: Resources, now: Instant, adopted: bool) -> Self {
        Self {
            instance,
            replica: None,
            resources,
            started: now,
            running_since: None,
            unready_since: None,
            stopping: false,
            adopted,
            handed: false,
        }
    }
}

impl LocalDeployment {
    fn new(model: &Model, d: &Deployment, pool: &Arc<Pool>) -> Self {
        let policy = Policy::of(model, d);
        Self {
            name: format!("{}/{}", model.id, d.id),
            pool: Arc::clone(pool),
            policy,
            autoscaler: policy.autoscaler(),
            replicas: Vec::new(),
            crashes: 0,
            backoff: Duration::ZERO,
            restart_not_before: None,
            last_desired: None,
            last_pending: None,
            failed_starts: 0,
            last_error: None,
            failed_with: None,
            cold_start: metrics::histogram!(
                telemetry::REPLICA_COLD_START,
                "model" => model.id.clone(),
                "deployment" => d.id.clone(),
            ),
        }
    }

    fn live(&self) -> impl Iterator<Item = &LocalReplica> {
        self.replicas.iter().filter(|t| !t.stopping)
    }
}

/// Owns local replicas and scales them. Run it with [`Controller::run`], a
/// task on the control plane ([`crate::plane::Plane::spawn`]).
pub struct Controller {
    routing: Arc<Routing>,
    provisioner: Arc<dyn Provisioner>,
    events: Arc<Notify>,
    capacity: NodeCapacity,
    settings: ScalingSettings,
    deployments: HashMap<(String, String), LocalDeployment>,
    epoch: Instant,
    /// Replicas the previous gateway handed over, adopted when `run` starts.
    adopting: Vec<Released>,
    /// Adopted replicas the config no longer wants, being stopped.
    leftovers: Vec<Arc<Instance>>,
    /// Set once replicas are being handed to the next gateway: nothing is
    /// started or stopped any more.
    frozen: bool,
    commands: Option<mpsc::UnboundedReceiver<handover::Command>>,
    /// In a fleet, how many replicas the leader placed on this node: they
    /// replace the local autoscaler's decision.
    placement: Option<Arc<Placement>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("deployments", &self.deployments.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller starting replicas with `provisioner`, which must notify
    /// `events` when a replica changes state.
    pub fn new(
        routing: Arc<Routing>,
        provisioner: Arc<dyn Provisioner>,
        events: Arc<Notify>,
        capacity: NodeCapacity,
        settings: ScalingSettings,
    ) -> Self {
        Self {
            routing,
            provisioner,
            events,
            capacity,
            settings,
            deployments: HashMap::new(),
            epoch: Instant::now(),
            adopting: Vec::new(),
            leftovers: Vec::new(),
            frozen: false,
            commands: None,
            placement: None,
        }
    }

    /// A fleet node's controller: it runs what the fleet's leader placed
    /// on this node instead of deciding itself, and holds what runs while
    /// the placement is unknown or stale.
    pub fn placed_by(mut self, placement: Arc<Placement>) -> Self {
        self.placement = Some(placement);
        self
    }

    /// A handle to reach this controller once it runs (the binary
    /// upgrade's handover).
    pub fn handle(&mut self) -> ControllerHandle {
        let (commands, receiver) = mpsc::unbounded_channel();
        self.commands = Some(receiver);
        ControllerHandle { commands }
    }

    /// Reconciles until `shutdown`, then stops every replica (but those
    /// handed to a successor) and returns once they are all gone.
    pub async fn run(mut self, mut shutdown: ShutdownSignal) {
        let scale_signal = Arc::clone(self.routing.load().scale_signal());
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.adopt_all();
        let mut commands = self.commands.take();
        loop {
            let sample = tokio::select! {
                _ = tick.tick() => true,
                () = scale_signal.notified() => false,
                () = self.events.notified() => false,
                Some(command) = handover::next(&mut commands) => {
                    self.command(command);
                    continue;
                }
                () = shutdown.requested() => break,
            };
            self.reconcile(sample);
        }
        self.stop_all().await;
    }

    /// One pass over every deployment; `sample` records the current load
    /// for the autoscaler (once per tick, so the window averages ticks).
    pub fn reconcile(&mut self, sample: bool) {
        if self.frozen {
            return;
        }
        let now = Instant::now();
        let snapshot = self.routing.load_full();
        let config = Arc::clone(snapshot.config());
        let mut deployments = std::mem::take(&mut self.deployments);
        let mut used = Usage::default();
        for t in deployments.values().flat_map(|m| &m.replicas) {
            used.add(&t.resources);
        }
        let mut seen = HashSet::new();
        for model in &config.models {
            for d in &model.deployments {
                let Some(route) = snapshot.deployment(&model.id, &d.id) else {
                    continue;
                };
                let key = (model.id.clone(), d.id.clone());
                if d.replicas != ReplicaSource::Local || d.engine.is_none() {
                    continue; // fixed replicas: the snapshot applies them
                }
                seen.insert(key.clone());
                let policy = Policy::of(model, d);
                let managed = deployments
                    .entry(key)
                    .or_insert_with(|| LocalDeployment::new(model, d, route.pool()));
                if managed.policy != policy {
                    log::info!("autoscaler {}: settings changed", managed.name);
                    managed.policy = policy;
                    managed.autoscaler = policy.autoscaler();
                }
                self.step(&model.id, d, managed, now, sample, &mut used);
            }
        }
        // Deployments deleted, or no longer local: stop their replicas.
        for (key, mut managed) in deployments {
            if seen.contains(&key) {
                self.deployments.insert(key, managed);
            } else if managed
                .replicas
                .iter()
                .any(|t| !t.instance.state().is_over())
            {
                for t in managed.replicas.iter_mut().filter(|t| !t.stopping) {
                    self.retire(&managed.pool, t, true);
                }
                // Keep following them until they are gone.
                self.follow(&mut managed, now);
                if !managed.replicas.is_empty() {
                    self.deployments.insert(key, managed);
                }
            }
        }
    }

    fn step(
        &self,
        model: &str,
        d: &Deployment,
        m: &mut LocalDeployment,
        now: Instant,
        sample: bool,
        used: &mut Usage,
    ) {
        self.follow(m, now);
        self.give_up_or_retry(d, m);
        let current = m.live().count() as u32;
        let in_flight = m.pool.in_flight();
        let parked = m.pool.parked();
        let t = now.duration_since(self.epoch);
        let woken = m.pool.take_wake();
        if !d.active {
            // Reactivation starts afresh from min_replica, not from the
            // load seen before the deactivation.
            m.autoscaler = m.policy.autoscaler();
        }
        if sample {
            m.autoscaler.observe(t, (in_flight + parked) as f64);
        }
        if woken > 0 {
            // A wake counts as the load those replicas serve, seen now:
            // they stay for the window, then scale down as usual.
            let load = m.autoscaler.load_for(woken);
            m.autoscaler.observe(t, load);
        }
        let decision = m.autoscaler.decide(t, current);
        let placed = self.placement.as_ref().map(|p| p.placed(model, &d.id));
        let desired = if !d.active || m.failed_with.is_some() {
            0
        } else if let Some(placed) = placed {
            match placed {
                Placed::Count(n) => n,
                Placed::Hold => current,
            }
        } else {
            let ceiling = m.autoscaler.max_replicas();
            let mut desired = decision.desired.max(woken.min(ceiling));
            if parked > 0 && current == 0 {
                desired = desired.max(1); // scale from zero at once
            }
            desired
        };
        log::debug!(
            "autoscaler {}: want {desired} of {current} (in flight {in_flight}, parked {parked}, stable {:.2}, burst {:.2}, burst mode {}, wake {woken})",
            m.name,
            decision.stable_signal,
            decision.burst_signal,
            decision.burst
        );
        if m.last_desired != Some(desired) {
            log::info!(
                "autoscaler {}: {current} -> {desired} replica(s) (in flight {in_flight}, parked {parked}, stable signal {:.2}, burst signal {:.2}, burst mode {}, wake {woken}, active {})",
                m.name,
                decision.stable_signal,
                decision.burst_signal,
                decision.burst,
                d.active
            );
            m.last_desired = Some(desired);
        }

        let mut pending = 0;
        let mut reason = None;
        if desired > current {
            for _ in current..desired {
                if let Some(at) = m.restart_not_before.filter(|&at| now < at) {
                    pending += 1;
                    reason = Some(PendingReason::RestartBackoff(at.duration_since(now)));
                    continue;
                }
                if let Err(short) = self.capacity.fits(used, &d.resources) {
                    pending += 1;
                    reason = Some(PendingReason::NoRoom(short));
                    continue;
                }
                let spec = ReplicaSpec {
                    deployment: m.name.clone(),
                    engine: d.engine.clone().expect("local deployments have an engine"),
                };
                match self.provisioner.start(&spec) {
                    Ok(instance) => {
                        used.add(&d.resources);
                        m.replicas.push(LocalReplica::new(
                            instance,
                            d.resources.clone(),
                            now,
                            false,
                        ));
                    }
                    Err(e) => {
                        pending += 1;
                        reason = Some(PendingReason::StartFailed(e.to_string()));
                    }
                }
            }
            if let Some(why) = &reason
                && reason != m.last_pending
            {
                log::warn!("{}: {pending} replica(s) pending: {why}", m.name);
            }
        } else if desired < current {
            // Ready replicas only, least busy first: a starting replica is
            // never idle, it just has not served yet. Deactivation stops all.
            let mut victims: Vec<usize> = (0..m.replicas.len())
                .filter(|&i| {
                    let t = &m.replicas[i];
                    !t.stopping && (t.replica.is_some() || !d.active)
                })
                .collect();
            victims.sort_by_key(|&i| {
                m.replicas[i]
                    .replica
                    .as_ref()
                    .map_or(0, |r| r.outstanding())
            });
            for i in victims.into_iter().take((current - desired) as usize) {
                self.retire(&m.pool, &mut m.replicas[i], true);
            }
        }
        m.last_pending.clone_from(&reason);
        let starting = m.live().filter(|t| t.replica.is_none()).count() as u32;
        m.pool.set_status(ScaleStatus {
            desired,
            starting,
            pending,
            pending_reason: reason,
            failed: m.failed_with.is_some(),
            last_error: m.last_error.clone(),
            crashes: m.crashes,
            stable_signal: decision.stable_signal,
            burst_signal: decision.burst_signal,
            burst_mode: decision.burst,
        });
    }

    /// Marks the deployment failed after too many failed starts in a row
    /// (no more replicas are started; its requests are refused at once with
    /// the replica's own error), and lifts that once its config changes.
    fn give_up_or_retry(&self, d: &Deployment, m: &mut LocalDeployment) {
        if let Some(failed_with) = &m.failed_with {
            if failed_with != d {
                log::info!("{}: its config changed; starting replicas again", m.name);
                m.failed_with = None;
                m.failed_starts = 0;
                m.backoff = Duration::ZERO;
                m.restart_not_before = None;
                m.pool.recover();
            }
            return;
        }
        if m.failed_starts >= self.settings.max_failed_starts {
            let why = format!(
                "{} replica starts failed in a row; the last: {}",
                m.failed_starts,
                m.last_error.as_deref().unwrap_or("no reason given")
            );
            log::error!("{}: deployment failed: {why}", m.name);
            m.pool.fail(&why);
            m.failed_with = Some(d.clone());
        }
    }

    /// Applies replica state changes: ready ones join routing, exited ones
    /// leave it (and, if unexpected, are counted and replaced after a backoff).
    fn follow(&self, m: &mut LocalDeployment, now: Instant) {
        let settings = self.settings;
        m.replicas.retain_mut(|t| match t.instance.state() {
            InstanceState::Starting => true,
            InstanceState::Running(addr) => {
                if t.replica.is_none() && !t.stopping {
                    let replica = Arc::new(Replica::ready(addr));
                    m.pool.add_replica(Arc::clone(&replica));
                    t.replica = Some(replica);
                    t.running_since = Some(now);
                    m.failed_starts = 0;
                    m.last_error = None;
                    if t.adopted {
                        log::info!("replica {} (adopted) is ready at {addr}", t.instance.name());
                    } else {
                        let cold_start = now.duration_since(t.started);
                        m.cold_start.record(cold_start);
                        log::info!(
                            "replica {} is ready at {addr} after {:.2} s",
                            t.instance.name(),
                            cold_start.as_secs_f64()
                        );
                    }
                }
                let unready = t
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.health() == routing::replicas::Health::Unready);
                if !unready || t.stopping {
                    t.unready_since = None;
                } else if now.duration_since(*t.unready_since.get_or_insert(now))
                    >= settings.unready_timeout
                {
                    // Alive but not answering: its requests are lost
                    // anyway, so no drain. A replacement starts at once.
                    m.crashes += 1;
                    log::warn!(
                        "replica {} failed its readiness probes for {:?}; replacing it",
                        t.instance.name(),
                        settings.unready_timeout
                    );
                    self.retire(&m.pool, t, false);
                }
                if !t.stopping && ejected_too_often(t.replica.as_deref(), &m.pool) {
                    // Alive, passing probes between ejections, and still
                    // failing its requests: a fresh process may do better.
                    m.crashes += 1;
                    log::warn!(
                        "replica {} was ejected {} times in a row; replacing it",
                        t.instance.name(),
                        t.replica.as_ref().map_or(0, |r| r.ejections())
                    );
                    self.retire(&m.pool, t, false);
                }
                true
            }
            InstanceState::Exited { reason } => {
                if let Some(replica) = &t.replica {
                    m.pool.remove_replica(replica);
                }
                if !t.stopping {
                    m.crashes += 1;
                    if t.running_since.is_none() {
                        m.failed_starts += 1;
                    }
                    m.last_error = Some(reason.clone());
                    let ran_long = t
                        .running_since
                        .is_some_and(|since| now.duration_since(since) >= settings.stable_after);
                    m.backoff = if ran_long || m.backoff.is_zero() {
                        settings.restart_backoff
                    } else {
                        (m.backoff * 2).min(settings.max_restart_backoff)
                    };
                    m.restart_not_before = Some(now + m.backoff);
                    log::warn!(
                        "replica {} exited unexpectedly ({reason}); replacing it in {:?}",
                        t.instance.name(),
                        m.backoff
                    );
                }
                false
            }
            InstanceState::Stopped => false,
        });
    }

    /// Takes a replica out of routing, lets its requests finish (with
    /// `drain`, up to the drain timeout), then stops it.
    fn retire(&self, pool: &Pool, t: &mut LocalReplica, drain: bool) {
        t.stopping = true;
        let provisioner = Arc::clone(&self.provisioner);
        let instance = Arc::clone(&t.instance);
        let Some(replica) = t.replica.clone() else {
            provisioner.stop(&instance);
            return;
        };
        pool.remove_replica(&replica);
        if !drain {
            provisioner.stop(&instance);
            return;
        }
        log::info!("replica {} draining", instance.name());
        let timeout = self.settings.drain_timeout;
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, replica.drained())
                .await
                .is_err()
            {
                log::warn!(
                    "replica {} still had {} request(s) in flight after the drain timeout ({timeout:?})",
                    instance.name(),
                    replica.outstanding()
                );
            }
            provisioner.stop(&instance);
        });
    }

    /// Stops every replica at once (the gateway is exiting: its own
    /// requests are drained already) and waits until all are gone.
    async fn stop_all(&mut self) {
        // Those handed to the next gateway are its own now.
        let instances: Vec<Arc<Instance>> = self
            .deployments
            .values()
            .flat_map(|m| &m.replicas)
            .filter(|t| !t.handed)
            .map(|t| Arc::clone(&t.instance))
            .chain(self.leftovers.iter().cloned())
            .collect();
        for instance in &instances {
            self.provisioner.stop(instance);
        }
        while instances.iter().any(|i| !i.state().is_over()) {
            self.events.notified().await;
        }
        log::info!("stopped {} replica(s)", instances.len());
    }
}

/// The way to reach a running [`Controller`].
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    commands: mpsc::UnboundedSender<handover::Command>,
}

/// Whether `replica`, ejected now, has been ejected as many times in a row
/// as its deployment allows before it is replaced.
fn ejected_too_often(replica: Option<&Replica>, pool: &Pool) -> bool {
    let after = pool.outlier_detection().restart_after_ejections;
    replica.is_some_and(|r| {
        after != 0 && r.health() == routing::replicas::Health::Ejected && r.ejections() >= after
    })
}

mod handover;
#[cfg(test)]
mod tests;
