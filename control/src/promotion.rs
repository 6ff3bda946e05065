//! Promotions in progress. Promoting a deployment into an environment is
//! not instant: the environment switches to the new deployment only once
//! that deployment has at least as many ready replicas as the current one's
//! `min_replica` (and at least one), so no request is sent into a cold
//! start. Then one config edit points the environment at it and applies the
//! environment's `cleanup_strategy` to the previous deployment; the routing
//! snapshot swaps in one store, so requests in flight finish where they
//! started and new ones go to the new deployment. At most one promotion per
//! environment runs at a time.
//!
//! With `ramp_up`, the environment instead gets a persisted rollout (start
//! time and duration in the config file): routing moves traffic to the new
//! deployment in ten stages (see [`routing::rollout`]), and this task watches
//! it: cancel removes the rollout (all traffic back at once), the rollback
//! guard removes it when the new deployment does worse, and at the end one
//! edit removes it and points the environment at the new deployment. A
//! gateway that restarts mid-rollout resumes it ([`Promotions::resume`]).
//!
//! In a fleet every gateway follows every rollout of the shared document
//! ([`Promotions::follow_new_rollouts`]), and only the leader rolls one
//! back or completes it, from the traffic it routes: each decision is made
//! once, and written once, as a compare-and-swap edit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use config::edit::EditError;
use serde_json::{Value, json};

use crate::fleet::FleetConfig;
use crate::plane::ShutdownSignal;
use crate::store::ConfigStore;
pub use outcome::PromotionReason;
use outcome::{EditFailure, Outcome};
use routing::Routing;
use routing::rollout::{self, Phase, STAGES};
use routing::snapshot::Target;
use routing::telemetry;
use switch::{needed_replicas, switch};

mod outcome;
mod switch;

/// How often a rollout checks its stage and the rollback guard (stages are
/// minutes apart; the guard's figures change with every request).
const POLL: Duration = Duration::from_millis(200);
/// How long a promotion waits for ready replicas before it fails.
const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionStatus {
    /// Waiting for the new deployment's replicas.
    InProgress,
    /// The environment points at the new deployment.
    Succeeded,
    /// Cancelled; the environment kept its deployment.
    Cancelled,
    /// Gave up (see the reason); the environment kept its deployment.
    Failed,
    /// The rollback guard cancelled the rollout (see the reason).
    RolledBack,
}

impl PromotionStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Succeeded => "SUCCEEDED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
            Self::RolledBack => "ROLLED_BACK",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    deployment: String,
    status: PromotionStatus,
    reason: Option<PromotionReason>,
    /// Set while the final edit is being written: too late to cancel.
    switching: bool,
    /// The rollout's stage, once traffic moves (ramp-up only).
    stage: Option<u32>,
}

/// Why a promotion could not start or be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// Another promotion into this environment is running (409).
    #[error(
        "a promotion into environment `{environment}` is already in progress (deployment `{deployment}`)"
    )]
    InProgress {
        /// The environment.
        environment: String,
        /// What it is promoting.
        deployment: String,
    },
    /// Nothing to cancel (404).
    #[error("no promotion in progress for environment `{0}`")]
    NoneInProgress(String),
    /// The switch is being written; it cannot be cancelled any more (409).
    #[error("the promotion into environment `{0}` is completing and cannot be cancelled")]
    Completing(String),
}

/// Promotions by (model, environment): the running ones and the last result.
#[derive(Debug)]
pub struct Promotions {
    routing: Arc<Routing>,
    store: Arc<ConfigStore>,
    entries: std::sync::Mutex<HashMap<(String, String), Entry>>,
    /// Promotions run here, whoever starts them (an API call, a restart):
    /// the control plane's runtime.
    runtime: tokio::runtime::Handle,
    /// Ends every running promotion (a rollout resumes from the config at
    /// the next start).
    shutdown: ShutdownSignal,
    /// Wakes rollouts that wait for their next check (a cancel).
    cancelled: tokio::sync::Notify,
    /// Held from the check that an environment has no promotion running
    /// until the new one is recorded ([`Starting`]): the caller's edits in
    /// between (copying a development deployment) happen only for a
    /// promotion that will start.
    starting: tokio::sync::Mutex<()>,
    /// In a fleet: the fleet and this node's name. Only the leader makes a
    /// rollout's decisions (roll back, complete); the others follow.
    fleet: Option<(Arc<FleetConfig>, String)>,
}

/// The right to start a promotion into one environment, checked: none is
/// running there, and none can start until this one does or is dropped.
#[derive(Debug)]
pub struct Starting<'a> {
    promotions: &'a Arc<Promotions>,
    model: String,
    environment: String,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl Starting<'_> {
    /// Starts promoting `deployment` in the background. The caller has
    /// checked that it exists.
    pub fn start(self, deployment: &str) {
        let key = (self.model.clone(), self.environment.clone());
        self.promotions.entries().insert(
            key.clone(),
            Entry {
                deployment: deployment.to_owned(),
                status: PromotionStatus::InProgress,
                reason: None,
                switching: false,
                stage: None,
            },
        );
        log::info!(
            "promotion of {}/{deployment} into `{}` started",
            self.model,
            self.environment
        );
        self.promotions.spawn(key, false);
    }
}

impl Promotions {
    /// Promotions that edit `store` and watch readiness in `routing`, run
    /// on `runtime` until `shutdown`.
    pub fn new(
        routing: Arc<Routing>,
        store: Arc<ConfigStore>,
        runtime: tokio::runtime::Handle,
        shutdown: ShutdownSignal,
    ) -> Arc<Self> {
        Self::in_fleet(routing, store, runtime, shutdown, None)
    }

    /// [`Self::new`] for a node of `fleet` (the fleet and this node's
    /// name): every node follows every rollout in the shared document, and
    /// only the leader rolls one back or completes it, so each decision is
    /// made once.
    pub fn in_fleet(
        routing: Arc<Routing>,
        store: Arc<ConfigStore>,
        runtime: tokio::runtime::Handle,
        shutdown: ShutdownSignal,
        fleet: Option<(Arc<FleetConfig>, String)>,
    ) -> Arc<Self> {
        Arc::new(Self {
            routing,
            store,
            entries: std::sync::Mutex::new(HashMap::new()),
            runtime,
            shutdown,
            cancelled: tokio::sync::Notify::new(),
            starting: tokio::sync::Mutex::new(()),
            fleet,
        })
    }

    /// Whether this gateway makes rollout decisions: outside a fleet
    /// always, in one while it leads.
    fn decides(&self) -> bool {
        self.fleet
            .as_ref()
            .is_none_or(|(fleet, node)| fleet.leader().as_deref() == Some(node))
    }

    /// Follows the rollouts that appear in the config (a fleet's shared
    /// document, written by another gateway) until `shutdown`.
    pub async fn follow_new_rollouts(self: Arc<Self>, mut shutdown: ShutdownSignal) {
        let mut published = self.routing.subscribe();
        loop {
            tokio::select! {
                changed = published.changed() => if changed.is_err() { return },
                () = shutdown.requested() => return,
            }
            let config = Arc::clone(self.routing.load().config());
            self.resume(&config);
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks that no promotion into `environment` is running (409
    /// otherwise) and holds that true until the returned [`Starting`]
    /// starts one or is dropped. A caller refused here has changed nothing.
    pub async fn begin(
        self: &Arc<Self>,
        model: &str,
        environment: &str,
    ) -> Result<Starting<'_>, PromotionError> {
        let turn = self.starting.lock().await;
        if let Some(e) = self
            .entries()
            .get(&(model.to_owned(), environment.to_owned()))
            && e.status == PromotionStatus::InProgress
        {
            return Err(PromotionError::InProgress {
                environment: environment.to_owned(),
                deployment: e.deployment.clone(),
            });
        }
        Ok(Starting {
            promotions: self,
            model: model.to_owned(),
            environment: environment.to_owned(),
            _turn: turn,
        })
    }

    /// Picks up the rollouts `config` has in progress (the gateway
    /// restarted mid-rollout): routing already splits by their persisted
    /// start time; this resumes watching and completing them.
    pub fn resume(self: &Arc<Self>, config: &Config) {
        for model in &config.models {
            for env in &model.environments {
                let Some(rollout) = &env.rollout else {
                    continue;
                };
                let key = (model.id.clone(), env.name.clone());
                if self.still_running(&key) {
                    continue; // followed already
                }
                self.entries().insert(
                    key.clone(),
                    Entry {
                        deployment: rollout.deployment.clone(),
                        status: PromotionStatus::InProgress,
                        reason: None,
                        switching: false,
                        stage: None,
                    },
                );
                log::info!(
                    "resuming the rollout of {}/{} into `{}`",
                    model.id,
                    rollout.deployment,
                    env.name
                );
                self.spawn(key, true);
            }
        }
    }

    /// Runs a promotion on the control plane's runtime; `resumed`: its
    /// rollout is already in the config.
    fn spawn(self: &Arc<Self>, key: (String, String), resumed: bool) {
        let this = Arc::clone(self);
        let mut shutdown = self.shutdown.clone();
        self.runtime.spawn(async move {
            let promotion = async {
                if resumed {
                    let deployment = this.entries().get(&key).map(|e| e.deployment.clone());
                    match deployment {
                        Some(d) => this.follow_rollout(&key, &d).await,
                        None => Outcome::Failed(PromotionReason::LostState),
                    }
                } else {
                    this.run(&key, &key.0, &key.1).await
                }
            };
            let (status, reason) = tokio::select! {
                outcome = promotion => outcome.into_parts(),
                () = shutdown.requested() => {
                    log::info!(
                        "promotion into {}/{} stopped by the shutdown (a rollout resumes at the next start)",
                        key.0,
                        key.1
                    );
                    return;
                }
            };
            let mut entries = this.entries();
            if let Some(e) = entries.get_mut(&key)
                && e.status == PromotionStatus::InProgress
            {
                log::info!(
                    "promotion of {}/{} into `{}`: {}{}",
                    key.0,
                    e.deployment,
                    key.1,
                    status.as_str(),
                    reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                e.status = status;
                e.reason = reason;
            }
        });
    }

    /// Cancels the running promotion into `environment`.
    pub fn cancel(&self, model: &str, environment: &str) -> Result<(), PromotionError> {
        let mut entries = self.entries();
        match entries.get_mut(&(model.to_owned(), environment.to_owned())) {
            Some(e) if e.status == PromotionStatus::InProgress && e.switching => {
                Err(PromotionError::Completing(environment.to_owned()))
            }
            Some(e) if e.status == PromotionStatus::InProgress => {
                e.status = PromotionStatus::Cancelled;
                log::info!("promotion into {model}/{environment} cancelled");
                // A rollout's traffic goes back now, not at its next check.
                self.cancelled.notify_waiters();
                Ok(())
            }
            _ => Err(PromotionError::NoneInProgress(environment.to_owned())),
        }
    }

    /// Cancels a running promotion into `environment` if there is one (the
    /// environment is being deleted).
    pub fn cancel_if_running(&self, model: &str, environment: &str) {
        let _ = self.cancel(model, environment);
    }

    /// The promotion into `environment` (running or last), as JSON.
    /// `current`: the deployment the environment points at in the config
    /// the caller shows beside it. Once the final switch is written there,
    /// the promotion is complete even if its own record has not caught up
    /// yet (it is set right after the write returns): the two never
    /// contradict each other.
    pub fn describe(&self, model: &str, environment: &str, current: Option<&str>) -> Value {
        match self
            .entries()
            .get(&(model.to_owned(), environment.to_owned()))
        {
            Some(e) => {
                let switched = e.status == PromotionStatus::InProgress
                    && e.switching
                    && current == Some(e.deployment.as_str());
                let (status, stage) = if switched {
                    (PromotionStatus::Succeeded, None)
                } else {
                    (e.status, e.stage)
                };
                let state = match (status, stage) {
                    (PromotionStatus::InProgress, None) => "WAITING_FOR_REPLICAS",
                    (PromotionStatus::InProgress, Some(_)) => "RAMPING",
                    (PromotionStatus::Succeeded, _) => "COMPLETED",
                    (status, _) => status.as_str(),
                };
                let rollout = stage.map(|k| {
                    json!({
                        "stage": k,
                        "stages": STAGES,
                        "percent_to_new": Phase::Stage(k).percent(),
                    })
                });
                json!({
                    "deployment_id": e.deployment,
                    "status": status.as_str(),
                    "state": state,
                    "rollout": rollout,
                    "reason": e.reason.as_ref().map(ToString::to_string),
                })
            }
            None => Value::Null,
        }
    }

    fn still_running(&self, key: &(String, String)) -> bool {
        self.entries()
            .get(key)
            .is_some_and(|e| e.status == PromotionStatus::InProgress)
    }

    async fn run(&self, key: &(String, String), model: &str, environment: &str) -> Outcome {
        let deployment = match self.entries().get(key) {
            Some(e) => e.deployment.clone(),
            None => return Outcome::Failed(PromotionReason::LostState),
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut published = self.routing.subscribe();
        loop {
            // Listening before the checks, so no change between them and
            // the wait is missed.
            let cancelled = self.cancelled.notified();
            let mut cancelled = std::pin::pin!(cancelled);
            cancelled.as_mut().enable();
            if !self.still_running(key) {
                return Outcome::Cancelled(None);
            }
            let mut readiness = match self.readiness(model, environment, &deployment) {
                Ok(Readiness::Enough) => break,
                Ok(Readiness::Waiting(readiness)) => readiness,
                Err(reason) => return Outcome::Failed(reason),
            };
            // Woken by what can change the answer: a replica becoming
            // ready or leaving, a new config, a cancel, the deadline.
            tokio::select! {
                _ = readiness.changed() => {}
                _ = published.changed() => {}
                () = cancelled => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Outcome::Failed(PromotionReason::NotReady(TIMEOUT));
                }
            }
        }
        let ramp = {
            let snapshot = self.routing.load();
            snapshot
                .config()
                .model(model)
                .and_then(|m| m.environment(environment))
                .filter(|e| e.promotion.ramp_up)
                .map(|e| Duration::from_secs(u64::from(e.promotion.ramp_up_duration)))
        };
        if let Some(duration) = ramp {
            let (m, env, dep) = (model.to_owned(), environment.to_owned(), deployment.clone());
            let started = self
                .edit(move |doc| {
                    doc.start_rollout(&m, &env, &dep, rollout::now_ms(), duration)
                        .map(|_| ())
                })
                .await;
            if let Err(error) = started {
                return Outcome::Failed(PromotionReason::Edit(error));
            }
            return self.follow_rollout(key, &deployment).await;
        }
        self.complete(key, &deployment)
            .await
            .unwrap_or(Outcome::Cancelled(None))
    }

    /// The final edit: remove the rollout if there is one, point the
    /// environment at `deployment`, apply the cleanup strategy. `None` if
    /// the promotion was cancelled first; past the check a cancel answers
    /// 409, since the edit is being written.
    async fn complete(&self, key: &(String, String), deployment: &str) -> Option<Outcome> {
        match self.entries().get_mut(key) {
            Some(e) if e.status == PromotionStatus::InProgress => e.switching = true,
            _ => return None,
        }
        let (m, env, dep) = (key.0.clone(), key.1.clone(), deployment.to_owned());
        let switched = self
            .edit(move |doc| {
                doc.clear_rollout(&m, &env)?;
                switch(doc, &m, &env, &dep)
            })
            .await;
        Some(match switched {
            Ok(()) => Outcome::Succeeded,
            Err(error) => Outcome::Failed(PromotionReason::Edit(error)),
        })
    }

    /// One config edit on a blocking thread. `change` may run more than
    /// once (a racing hand edit makes the store redo it on the new text).
    async fn edit(
        &self,
        change: impl Fn(&mut config::edit::ConfigDocument) -> Result<(), EditError> + Send + 'static,
    ) -> Result<(), EditFailure> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.edit(None, |doc| change(doc)))
            .await
            .map_err(|e| EditFailure::Aborted(e.to_string().into()))?
            .map(|_| ())
            .map_err(|e| EditFailure::Store(Arc::new(e)))
    }

    /// Watches a rollout that is in the config: stage by stage, the
    /// rollback guard, cancel, and the final switch.
    async fn follow_rollout(&self, key: &(String, String), deployment: &str) -> Outcome {
        let (model, environment) = (key.0.as_str(), key.1.as_str());
        loop {
            let cancelled = self.cancelled.notified();
            let mut cancelled = std::pin::pin!(cancelled);
            cancelled.as_mut().enable();
            if !self.still_running(key) {
                let outcome = self.remove_rollout(model, environment).await;
                return Outcome::Cancelled(outcome.err().map(PromotionReason::Edit));
            }
            let snapshot = self.routing.load_full();
            let Some(env) = snapshot
                .config()
                .model(model)
                .and_then(|m| m.environment(environment))
            else {
                return Outcome::Cancelled(Some(PromotionReason::EnvironmentDeleted(
                    environment.to_owned(),
                )));
            };
            let guard = env.promotion.rollback;
            let Some(rollout) = snapshot
                .model(model)
                .ok()
                .and_then(|m| m.environment_route(environment))
                .and_then(|e| e.rollout())
            else {
                // In a fleet, the leader's completion removes it too.
                if env.deployment.as_deref() == Some(deployment) {
                    return Outcome::Succeeded;
                }
                return Outcome::Cancelled(Some(PromotionReason::RolloutRemoved));
            };
            match rollout.phase(rollout::now_ms()) {
                Phase::Stage(stage) => {
                    let stats = rollout.state().stats();
                    if stats.enter_stage(stage) {
                        log::info!(
                            "rollout of {model}/{deployment} into `{environment}`: stage {stage} of {STAGES}, {}% to the new deployment",
                            Phase::Stage(stage).percent()
                        );
                    }
                    if let Some(e) = self.entries().get_mut(key) {
                        e.stage = Some(stage);
                    }
                    let verdict = match guard.filter(|_| self.decides()) {
                        Some(guard) => {
                            let (stable, canary) =
                                self.side_summaries(model, environment, stage, stats).await;
                            rollout::rollback_reason(&guard, &stable, &canary)
                        }
                        None => None,
                    };
                    if let Some(reason) = verdict {
                        log::warn!(
                            "rollout of {model}/{deployment} into `{environment}` rolled back: {reason}"
                        );
                        metrics::counter!(
                            telemetry::CANARY_ROLLBACKS,
                            "model" => model.to_owned(),
                            "environment" => environment.to_owned(),
                            "reason" => reason.label(),
                        )
                        .increment(1);
                        if let Err(error) = self.remove_rollout(model, environment).await {
                            return Outcome::Failed(PromotionReason::RollbackNotWritten {
                                why: reason,
                                error,
                            });
                        }
                        return Outcome::RolledBack(reason);
                    }
                }
                // In a fleet, the leader completes it; the others see the
                // rollout go.
                Phase::Complete if !self.decides() => {}
                Phase::Complete => match self.complete(key, deployment).await {
                    Some(outcome) => return outcome,
                    None => continue, // cancelled meanwhile: the loop removes it
                },
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = cancelled => {}
            }
        }
    }

    /// (stable, canary) over the current stage: the fleet's, summed from
    /// every node's published counts, in a fleet; else (or while etcd is
    /// out of reach) this gateway's own.
    async fn side_summaries(
        &self,
        model: &str,
        environment: &str,
        stage: u32,
        local: &rollout::RolloutStats,
    ) -> (rollout::SideSummary, rollout::SideSummary) {
        let Some((fleet, _)) = &self.fleet else {
            return local.summaries();
        };
        match crate::fleet::fleet_rollout(fleet.document(), model, environment, stage).await {
            Ok(summaries) => summaries,
            Err(e) => {
                log::debug!("rollout guard: {e}; judging this gateway's traffic");
                local.summaries()
            }
        }
    }

    /// Removes the rollout: all traffic back to the environment's deployment.
    async fn remove_rollout(&self, model: &str, environment: &str) -> Result<(), EditFailure> {
        let (m, env) = (model.to_owned(), environment.to_owned());
        self.edit(move |doc| doc.clear_rollout(&m, &env).map(|_| ()))
            .await
    }

    /// Whether `deployment` has as many ready replicas as the promotion
    /// needs, by the published config (a broken hand edit is never
    /// published, so it does not disturb a promotion); if not, a watch of
    /// the replicas' readiness taken before the count. An error when the
    /// promotion can no longer succeed.
    fn readiness(
        &self,
        model: &str,
        environment: &str,
        deployment: &str,
    ) -> Result<Readiness, PromotionReason> {
        let snapshot = self.routing.load();
        let needed = needed_replicas(snapshot.config(), model, environment, deployment)?;
        let pool = snapshot
            .model(model)
            .ok()
            .and_then(|m| m.resolve(Target::Deployment(deployment)).ok())
            .map(|route| Arc::clone(route.pool()))
            .ok_or_else(|| PromotionReason::DeploymentDeleted(deployment.to_owned()))?;
        let readiness = pool.watch_readiness();
        if pool.replicas().ready_count() >= needed {
            return Ok(Readiness::Enough);
        }
        // Local replicas scaled to zero: start what the switch needs.
        pool.wake(u32::try_from(needed).unwrap_or(u32::MAX));
        Ok(Readiness::Waiting(readiness))
    }
}

/// Whether a promotion may switch, or what to watch until it may.
enum Readiness {
    Enough,
    Waiting(tokio::sync::watch::Receiver<()>),
}
