//! The immutable, pre-resolved routing table built from one config.

use std::collections::HashMap;
use std::sync::Arc;

use config::{Config, DeploymentKind, ReplicaSource};
use http::HeaderValue;

use crate::auth::KeyTable;
use crate::replicas::ReplicaSet;

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
    replicas: Arc<ReplicaSet>,
}

impl DeploymentRoute {
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

    /// Its replicas (shared with later snapshots while unchanged).
    pub fn replicas(&self) -> &Arc<ReplicaSet> {
        &self.replicas
    }
}

/// A model's deployments and environments, resolved to deployment routes.
#[derive(Debug)]
pub struct ModelRoutes {
    deployments: HashMap<Box<str>, Arc<DeploymentRoute>>,
    environments: HashMap<Box<str>, Option<Arc<DeploymentRoute>>>,
    production: Option<Arc<DeploymentRoute>>,
    development: Option<Arc<DeploymentRoute>>,
}

impl ModelRoutes {
    /// The active deployment a target names.
    pub fn resolve(&self, target: Target<'_>) -> Result<&Arc<DeploymentRoute>, RouteError> {
        let route = match target {
            Target::Production => self
                .production
                .as_ref()
                .ok_or(RouteError::EmptyEnvironment)?,
            Target::Environment(name) => self
                .environments
                .get(name)
                .ok_or(RouteError::UnknownEnvironment)?
                .as_ref()
                .ok_or(RouteError::EmptyEnvironment)?,
            Target::Development => self.development.as_ref().ok_or(RouteError::NoDevelopment)?,
            Target::Deployment(id) => self
                .deployments
                .get(id)
                .ok_or(RouteError::UnknownDeployment)?,
        };
        if route.active {
            Ok(route)
        } else {
            Err(RouteError::Inactive)
        }
    }
}

/// Everything the hot path reads, built once per config revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    models: HashMap<Box<str>, ModelRoutes>,
    keys: KeyTable,
}

impl Snapshot {
    /// Builds the routing table for `config`, reusing the replica sets (and
    /// so the in-flight counts) of `previous` for deployments whose replicas
    /// did not change.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Self {
        let mut models = HashMap::with_capacity(config.models.len());
        for model in &config.models {
            let old = previous.and_then(|p| p.models.get(model.id.as_str()));
            let mut deployments = HashMap::with_capacity(model.deployments.len());
            let mut development = None;
            for d in &model.deployments {
                let ReplicaSource::Static { addresses } = &d.replicas;
                let replicas = old
                    .and_then(|o| o.deployments.get(d.id.as_str()))
                    .map(|r| &r.replicas)
                    .filter(|set| set.same_addresses(addresses))
                    .map_or_else(|| Arc::new(ReplicaSet::new(addresses)), Arc::clone);
                let route = Arc::new(DeploymentRoute {
                    id: d.id.as_str().into(),
                    id_header: HeaderValue::from_str(&d.id).expect("validated ids are header-safe"),
                    active: d.active,
                    replicas,
                });
                if d.kind == DeploymentKind::Development {
                    development = Some(Arc::clone(&route));
                }
                deployments.insert(d.id.as_str().into(), route);
            }
            let environments: HashMap<Box<str>, Option<Arc<DeploymentRoute>>> = model
                .environments
                .iter()
                .map(|e| {
                    let route = e
                        .deployment
                        .as_deref()
                        .and_then(|id| deployments.get(id))
                        .cloned();
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
        Self {
            models,
            keys: KeyTable::new(&config.api_keys),
        }
    }

    /// The routes of a model.
    pub fn model(&self, id: &str) -> Result<&ModelRoutes, RouteError> {
        self.models.get(id).ok_or(RouteError::UnknownModel)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
[[models.deployments]]
id = "b"
active = false
replicas = { source = "static", addresses = ["127.0.0.1:9002"] }
[[models.deployments]]
id = "dev"
kind = "development"
replicas = { source = "static", addresses = ["127.0.0.1:9003"] }
[[models.environments]]
name = "staging"
deployment = "b"
[[models.environments]]
name = "empty"
"#;

    fn snapshot() -> Snapshot {
        Snapshot::build(&config::load_str(TEXT, "t").unwrap(), None)
    }

    #[test]
    fn targets_resolve_or_say_why_not() {
        let s = snapshot();
        let m = s.model("m").unwrap();
        assert_eq!(s.model("x").unwrap_err(), RouteError::UnknownModel);
        assert_eq!(m.resolve(Target::Deployment("a")).unwrap().id(), "a");
        assert_eq!(m.resolve(Target::Development).unwrap().id(), "dev");
        assert_eq!(
            m.resolve(Target::Deployment("b")).unwrap_err(),
            RouteError::Inactive
        );
        assert_eq!(
            m.resolve(Target::Environment("staging")).unwrap_err(),
            RouteError::Inactive
        );
        assert_eq!(
            m.resolve(Target::Environment("empty")).unwrap_err(),
            RouteError::EmptyEnvironment
        );
        assert_eq!(
            m.resolve(Target::Production).unwrap_err(),
            RouteError::EmptyEnvironment
        );
        assert_eq!(
            m.resolve(Target::Environment("nope")).unwrap_err(),
            RouteError::UnknownEnvironment
        );
        assert_eq!(
            m.resolve(Target::Deployment("zz")).unwrap_err(),
            RouteError::UnknownDeployment
        );
    }

    #[test]
    fn unchanged_replica_sets_survive_a_rebuild() {
        let first = snapshot();
        let lease = first
            .model("m")
            .unwrap()
            .resolve(Target::Deployment("a"))
            .unwrap()
            .replicas()
            .pick()
            .unwrap();
        let changed = TEXT.replace("127.0.0.1:9003", "127.0.0.1:9004");
        let second = Snapshot::build(&config::load_str(&changed, "t").unwrap(), Some(&first));
        let a = second
            .model("m")
            .unwrap()
            .resolve(Target::Deployment("a"))
            .unwrap();
        assert_eq!(
            a.replicas().replicas()[0].outstanding(),
            1,
            "in-flight count carried over"
        );
        drop(lease);
        assert_eq!(a.replicas().replicas()[0].outstanding(), 0);
        let dev = second
            .model("m")
            .unwrap()
            .resolve(Target::Development)
            .unwrap();
        assert_eq!(dev.replicas().replicas()[0].addr().port(), 9004);
    }
}
