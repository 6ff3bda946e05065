//! The immutable, pre-resolved routing table built from one config.

use std::collections::HashMap;
use std::sync::Arc;

use config::Config;
use http::HeaderValue;

use crate::auth::KeyTable;
use crate::pool::{ParkedBytes, Pool, ScaleSignal};
use crate::rollout::{Phase, RolloutState, Side, sticky_side};
use crate::telemetry::{RecentStats, RouteMetrics};

/// Which deployment of a model a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/production/...`: the production environment.
    Production,
    /// `/environments/{name}/...`.
    Environment(&'a str),
    /// `/development/...`: the model's development deployment.
    Development,
    /// `/deployment/{id}/...`.
    Deployment(&'a str),
}

/// Why a target did not resolve to a servable deployment. All are 404s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No model with that id.
    #[error("model not found")]
    UnknownModel,
    /// The model has no such environment.
    #[error("environment not found")]
    UnknownEnvironment,
    /// The model has no such deployment.
    #[error("deployment not found")]
    UnknownDeployment,
    /// The model has no development deployment.
    #[error("this model has no development deployment")]
    NoDevelopment,
    /// The environment exists but nothing has been promoted into it.
    #[error("no deployment has been promoted to this environment")]
    EmptyEnvironment,
    /// The deployment is deactivated.
    #[error("deployment is inactive")]
    Inactive,
}

/// One deployment as the hot path needs it.
#[derive(Debug)]
pub struct DeploymentRoute {
    id: Box<str>,
    id_header: HeaderValue,
    active: bool,
    pool: Arc<Pool>,
    /// Its last minute, whichever way requests reached it (kept across
    /// snapshots, like the pool).
    recent: Arc<RecentStats>,
    /// Handles for requests that name the deployment (or development).
    metrics: Arc<RouteMetrics>,
    /// Its own request body limit, if it sets one.
    max_request_body_bytes: Option<u64>,
    /// Replica paths reachable through `/sync/...`.
    sync_routes: config::SyncRoutes,
}

impl DeploymentRoute {
    /// Its request body limit: its own, or `default` (the server's).
    pub fn max_request_body_bytes(&self, default: u64) -> u64 {
        self.max_request_body_bytes.unwrap_or(default)
    }

    /// Whether clients may reach the replica path `path` through
    /// `/sync/...`.
    pub fn allows_sync(&self, path: &str) -> bool {
        self.sync_routes.allows(path)
    }

    /// The deployment id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id, ready to send as the `x-deployment-id` response header.
    pub fn id_header(&self) -> &HeaderValue {
        &self.id_header
    }

    /// Whether it serves traffic.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Its replicas and activation queue (shared with later snapshots).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// What it served over the last minute.
    pub fn recent(&self) -> &Arc<RecentStats> {
        &self.recent
    }
}

/// A canary rollout as routing needs it.
#[derive(Debug)]
pub struct RolloutRoute {
    canary: Arc<DeploymentRoute>,
    /// Handles for the environment's requests sent to the canary.
    metrics: Arc<RouteMetrics>,
    rollout: config::Rollout,
    state: Arc<RolloutState>,
}

impl RolloutRoute {
    /// The deployment traffic moves to.
    pub fn canary(&self) -> &Arc<DeploymentRoute> {
        &self.canary
    }

    /// Where the rollout stands at `now_ms` (Unix milliseconds).
    pub fn phase(&self, now_ms: u64) -> Phase {
        Phase::of(&self.rollout, now_ms)
    }

    /// The split's position and the statistics.
    pub fn state(&self) -> &Arc<RolloutState> {
        &self.state
    }
}

/// What an environment serves: its deployment, and the one a rollout is
/// moving traffic to, if any.
#[derive(Debug)]
pub struct EnvironmentRoute {
    stable: Arc<DeploymentRoute>,
    rollout: Option<RolloutRoute>,
    /// Its last minute, across deployments and promotions.
    recent: Arc<RecentStats>,
    /// Handles for its requests sent to `stable`.
    metrics: Arc<RouteMetrics>,
}

impl EnvironmentRoute {
    /// What it served over the last minute.
    pub fn recent(&self) -> &Arc<RecentStats> {
        &self.recent
    }

    /// The rollout in progress, if any.
    pub fn rollout(&self) -> Option<&RolloutRoute> {
        self.rollout.as_ref()
    }
}

/// How a request chooses a side of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidePreference {
    /// The smooth split decides.
    Split,
    /// A session (hash of its id) sticks to one side.
    Session(u64),
    /// Forced (admin testing).
    Pinned(Side),
}

/// The deployment a request goes to, and the rollout side it counts for.
#[derive(Debug)]
pub struct Resolved<'a> {
    /// Where it goes.
    pub route: &'a Arc<DeploymentRoute>,
    /// The rollout it is part of, and its side.
    pub rollout: Option<(&'a Arc<RolloutState>, Side)>,
    /// Where it is counted.
    pub metrics: &'a Arc<RouteMetrics>,
}

/// A model's deployments and environments, resolved to deployment routes.
#[derive(Debug)]
pub struct ModelRoutes {
    deployments: HashMap<Box<str>, Arc<DeploymentRoute>>,
    environments: HashMap<Box<str>, Option<Arc<EnvironmentRoute>>>,
    production: Option<Arc<EnvironmentRoute>>,
    development: Option<Arc<DeploymentRoute>>,
}

impl ModelRoutes {
    fn environment(
        &self,
        target: Target<'_>,
    ) -> Result<Option<&Arc<EnvironmentRoute>>, RouteError> {
        Ok(match target {
            Target::Production => Some(
                self.production
                    .as_ref()
                    .ok_or(RouteError::EmptyEnvironment)?,
            ),
            Target::Environment(name) => Some(
                self.environments
                    .get(name)
                    .ok_or(RouteError::UnknownEnvironment)?
                    .as_ref()
                    .ok_or(RouteError::EmptyEnvironment)?,
            ),
            Target::Development | Target::Deployment(_) => None,
        })
    }

    /// The active deployment a target names; for an environment in a
    /// rollout, the deployment it points at (the control plane's view).
    pub fn resolve(&self, target: Target<'_>) -> Result<&Arc<DeploymentRoute>, RouteError> {
        let route = match self.environment(target)? {
            Some(env) => &env.stable,
            None => match target {
                Target::Development => {
                    self.development.as_ref().ok_or(RouteError::NoDevelopment)?
                }
                Target::Deployment(id) => self
                    .deployments
                    .get(id)
                    .ok_or(RouteError::UnknownDeployment)?,
                Target::Production | Target::Environment(_) => unreachable!("environments above"),
            },
        };
        active(route)
    }

    /// Where one request goes. An environment in a rollout splits by the
    /// stage at `now_ms()` (read only then); deployment and development
    /// targets never split.
    pub fn resolve_request(
        &self,
        target: Target<'_>,
        preference: SidePreference,
        now_ms: impl FnOnce() -> u64,
    ) -> Result<Resolved<'_>, RouteError> {
        let Some(env) = self.environment(target)? else {
            let route = self.resolve(target)?;
            return Ok(Resolved {
                route,
                rollout: None,
                metrics: &route.metrics,
            });
        };
        let Some(rollout) = &env.rollout else {
            return Ok(Resolved {
                route: active(&env.stable)?,
                rollout: None,
                metrics: &env.metrics,
            });
        };
        let percent = rollout.phase(now_ms()).percent();
        let side = match preference {
            SidePreference::Pinned(side) => side,
            SidePreference::Session(hash) => sticky_side(hash, percent),
            SidePreference::Split => rollout.state.split().next(percent),
        };
        let (route, metrics) = match side {
            Side::Stable => (&env.stable, &env.metrics),
            Side::Canary => (&rollout.canary, &rollout.metrics),
        };
        Ok(Resolved {
            route: active(route)?,
            rollout: Some((&rollout.state, side)),
            metrics,
        })
    }

    /// An environment's route (control plane: rollout status and guard).
    pub fn environment_route(&self, name: &str) -> Option<&Arc<EnvironmentRoute>> {
        self.environments.get(name)?.as_ref()
    }
}

fn active(route: &Arc<DeploymentRoute>) -> Result<&Arc<DeploymentRoute>, RouteError> {
    if route.active {
        Ok(route)
    } else {
        Err(RouteError::Inactive)
    }
}

/// Everything the hot path reads, built once per config revision.
#[derive(Debug)]
pub struct Snapshot {
    models: HashMap<Box<str>, ModelRoutes>,
    keys: KeyTable,
    config: Arc<Config>,
    parked_bytes: Arc<ParkedBytes>,
    scale_signal: Arc<ScaleSignal>,
    /// Handles for requests that resolve to no deployment.
    unrouted: Arc<RouteMetrics>,
}

impl Snapshot {
    /// The config this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The parked-bytes budget all pools share.
    pub fn parked_bytes(&self) -> &Arc<ParkedBytes> {
        &self.parked_bytes
    }

    /// The scaling controller's wake-up bell, which all pools ring.
    pub fn scale_signal(&self) -> &Arc<ScaleSignal> {
        &self.scale_signal
    }

    /// The route of a model's deployment, active or not (control plane).
    pub fn deployment(&self, model_id: &str, deployment_id: &str) -> Option<&Arc<DeploymentRoute>> {
        self.models.get(model_id)?.deployments.get(deployment_id)
    }

    /// The routes of a model.
    pub fn model(&self, id: &str) -> Result<&ModelRoutes, RouteError> {
        self.models.get(id).ok_or(RouteError::UnknownModel)
    }

    /// Where requests that resolve to no deployment are counted (401, 404
    /// for an unknown model...): empty labels, whatever the client sent.
    pub fn unrouted_metrics(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    /// The API keys.
    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }

    /// How many models it routes.
    pub fn model_count(&self) -> usize {
        self.models.len()
    }

    /// Every deployment of every model, active or not, in no set order: for
    /// the control plane (health checks, status), not the hot path.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<DeploymentRoute>> {
        self.models.values().flat_map(|m| m.deployments.values())
    }
}

mod build;

pub use build::{Effect, Update};

#[cfg(test)]
mod tests;
