//! Models and what they hold: deployments (resources, autoscaling,
//! replicas) and environments, with the lifecycle rules between them.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::Checker;
use crate::model::*;
use crate::path::ConfigPath;
use crate::raw::*;
use crate::resources::Resources;

pub(super) fn model(c: &mut Checker<'_>, path: &ConfigPath, raw: RawModel) -> Option<Model> {
    let header = raw.header?;
    let id = c.required(path, "id", &header.id).map(str::to_owned);
    if let Some(id) = &id
        && !is_model_id(id)
    {
        c.error(path.key("id"), format!("model id `{id}` must be 1-57 lowercase letters or digits (it is used in the host name `model-{{id}}`)"));
    }
    let name = header
        .name
        .clone()
        .or_else(|| id.clone())
        .unwrap_or_default();

    let mut deployments = Vec::with_capacity(raw.deployments.len());
    let mut deployment_ids = HashSet::new();
    let mut development: Option<usize> = None;
    for (i, raw_deployment) in raw.deployments.into_iter().enumerate() {
        let path = path.key("deployments").index(i);
        let Some(d) = raw_deployment.and_then(|d| deployment(c, &path, i, d)) else {
            continue;
        };
        if !deployment_ids.insert(d.id.clone()) {
            c.error(
                path.key("id"),
                format!("duplicate deployment id `{}` in this model", d.id),
            );
        }
        if d.kind == DeploymentKind::Development {
            if let Some(first) = development {
                c.error(
                    path.key("kind"),
                    format!("a model has at most one development deployment (deployments[{first}] is one)"),
                );
            }
            development = Some(i);
        }
        deployments.push(d);
    }

    let mut environments: Vec<Environment> = Vec::with_capacity(raw.environments.len() + 1);
    for (i, raw_env) in raw.environments.into_iter().enumerate() {
        let path = path.key("environments").index(i);
        let Some(env) = raw_env.and_then(|e| environment(c, &path, e)) else {
            continue;
        };
        if environments.iter().any(|e| e.name == env.name) {
            let message = if env.name == PRODUCTION {
                "only the production environment may be named `production`".to_owned()
            } else {
                format!("duplicate environment name `{}`", env.name)
            };
            c.error(path.key("name"), message);
        }
        if let Some(target) = &env.deployment
            && !deployments.iter().any(|d| &d.id == target)
            && !deployment_ids.contains(target)
        {
            c.error(
                path.key("deployment"),
                format!(
                    "environment `{}` points at unknown deployment `{target}`",
                    env.name
                ),
            );
        }
        if let Some(rollout) = &env.rollout {
            super::rollout::check_deployments(c, &path.key("rollout"), &env, rollout, &deployments);
        }
        environments.push(env);
    }
    if !environments.iter().any(|e| e.name == PRODUCTION) {
        environments.insert(
            0,
            Environment {
                name: PRODUCTION.to_owned(),
                deployment: None,
                autoscaling: None,
                promotion: Promotion::default(),
                rollout: None,
            },
        );
    }
    Some(Model {
        id: id?,
        name,
        deployments,
        environments,
    })
}

fn deployment(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    index: usize,
    raw: RawDeployment,
) -> Option<Deployment> {
    let id = c.required(path, "id", &raw.id).map(str::to_owned);
    if let Some(id) = &id
        && !is_deployment_id(id)
    {
        c.error(path.key("id"), format!("deployment id `{id}` must be 1-64 letters, digits, `-` or `_`, and not `development` or `production`"));
    }
    let kind = match raw.kind.as_deref() {
        None | Some("regular") => DeploymentKind::Regular,
        Some("development") => DeploymentKind::Development,
        Some(other) => {
            c.error(
                path.key("kind"),
                format!("unknown deployment kind `{other}`: use \"regular\" or \"development\""),
            );
            DeploymentKind::Regular
        }
    };
    let default_name = match kind {
        DeploymentKind::Development => "development".to_owned(),
        DeploymentKind::Regular => format!("deployment-{}", index + 1),
    };
    let resources = resources(c, path, raw.instance_type.as_deref(), raw.resources);
    let predict_concurrency = c.ranged(
        path,
        "predict_concurrency",
        raw.predict_concurrency,
        1,
        1,
        10_000,
    );
    let autoscaling = autoscaling(
        c,
        &path.key("autoscaling"),
        raw.autoscaling.unwrap_or_default(),
    );
    if kind == DeploymentKind::Development && autoscaling.max_replica > 1 {
        c.error(
            path.key("autoscaling").key("max_replica"),
            format!(
                "a development deployment runs at most one replica; `max_replica` is {}",
                autoscaling.max_replica
            ),
        );
    }
    if autoscaling.concurrency_target > predict_concurrency {
        c.error(
            path.key("autoscaling").key("concurrency_target"),
            format!(
                "`concurrency_target` ({}) exceeds `predict_concurrency` ({predict_concurrency}): replicas could never reach it",
                autoscaling.concurrency_target
            ),
        );
    }
    let replicas = replicas(c, &path.key("replicas"), raw.replicas);
    let queue = super::queue::queue(c, &path.key("queue"), raw.queue.unwrap_or_default());
    let engine = match raw.engine {
        Some(e) => Some(super::engine::engine(
            c,
            &path.key("engine"),
            e,
            Some(predict_concurrency),
        )?),
        None => None,
    };
    if replicas == Some(ReplicaSource::Local) && engine.is_none() {
        c.error(
            path.key("engine"),
            "missing `engine`: a deployment with local replicas needs an `engine` table (how its replicas run), or set `replicas = { source = \"static\", addresses = [...] }`",
        );
    }
    Some(Deployment {
        id: id?,
        name: raw.name.unwrap_or(default_name),
        kind,
        active: raw.active.unwrap_or(true),
        resources: resources?,
        predict_concurrency,
        autoscaling,
        replicas: replicas?,
        engine,
        queue,
        max_request_body_bytes: raw.max_request_body_bytes,
        sync_routes: sync_routes(c, &path.key("sync_routes"), raw.sync_routes),
        outlier_detection: super::failures::outlier_detection(
            c,
            &path.key("outlier_detection"),
            raw.outlier_detection.unwrap_or_default(),
        ),
        retry: super::failures::retry(c, &path.key("retry"), raw.retry.unwrap_or_default()),
    })
}

fn sync_routes(c: &mut Checker<'_>, path: &ConfigPath, raw: Option<Vec<String>>) -> SyncRoutes {
    let Some(routes) = raw else {
        return SyncRoutes::default();
    };
    for route in &routes {
        if let Some(problem) = SyncRoutes::problem(route) {
            c.error(path.clone(), format!("sync route `{route}` {problem}"));
        }
    }
    SyncRoutes::new(routes)
}

fn resources(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    instance_type: Option<&str>,
    raw: Option<RawResources>,
) -> Option<Resources> {
    match (instance_type, raw) {
        (Some(_), Some(_)) => {
            c.error(
                path.key("resources"),
                "set either `instance_type` or `resources`, not both",
            );
            None
        }
        (Some(text), None) => Resources::from_instance_type(text)
            .map_err(|e| c.error(path.key("instance_type"), e))
            .ok(),
        (None, None) => Some(Resources::default()),
        (None, Some(raw)) => {
            let path = path.key("resources");
            let default = Resources::default();
            let cpu_millis = match raw.cpu {
                None => default.cpu_millis,
                Some(cpu) => c.cores(&path, "cpu", cpu)?,
            };
            let memory_mib = match raw.memory.as_deref().map(Resources::parse_memory) {
                None => default.memory_mib,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    c.error(path.key("memory"), e);
                    return None;
                }
            };
            let accelerator = match raw.accelerator.as_deref().map(Resources::parse_accelerator) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    c.error(path.key("accelerator"), e);
                    return None;
                }
            };
            Some(Resources {
                cpu_millis,
                memory_mib,
                accelerator,
            })
        }
    }
}

fn autoscaling(c: &mut Checker<'_>, path: &ConfigPath, raw: RawAutoscaling) -> Autoscaling {
    let d = Autoscaling::default();
    let max = u32::MAX;
    let a = Autoscaling {
        min_replica: c.ranged(
            path,
            "min_replica",
            raw.min_replica,
            d.min_replica,
            0,
            10_000,
        ),
        max_replica: c.ranged(
            path,
            "max_replica",
            raw.max_replica,
            d.max_replica,
            1,
            10_000,
        ),
        autoscaling_window: c.ranged(
            path,
            "autoscaling_window",
            raw.autoscaling_window,
            d.autoscaling_window,
            10,
            3600,
        ),
        scale_down_delay: c.ranged(
            path,
            "scale_down_delay",
            raw.scale_down_delay,
            d.scale_down_delay,
            0,
            3600,
        ),
        max_scale_down_rate: c.ranged(
            path,
            "max_scale_down_rate",
            raw.max_scale_down_rate,
            d.max_scale_down_rate,
            1,
            50,
        ),
        concurrency_target: c.ranged(
            path,
            "concurrency_target",
            raw.concurrency_target,
            d.concurrency_target,
            1,
            max,
        ),
        target_utilization_percentage: c.ranged(
            path,
            "target_utilization_percentage",
            raw.target_utilization_percentage,
            d.target_utilization_percentage,
            1,
            100,
        ),
    };
    if a.min_replica > a.max_replica {
        c.error(
            path.key("min_replica"),
            format!(
                "`min_replica` ({}) is greater than `max_replica` ({})",
                a.min_replica, a.max_replica
            ),
        );
    }
    a
}

fn replicas(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: Option<RawReplicas>,
) -> Option<ReplicaSource> {
    // No `replicas` key: the gateway starts the replicas itself.
    let Some(raw) = raw else {
        return Some(ReplicaSource::Local);
    };
    match raw.source.as_deref() {
        Some("static") => {}
        Some("local") => {
            if raw.addresses.is_some() {
                c.error(
                    path.key("addresses"),
                    "`addresses` applies only to source = \"static\": the gateway starts local replicas itself and knows their addresses",
                );
                return None;
            }
            return Some(ReplicaSource::Local);
        }
        Some(other) => {
            c.error(
                path.key("source"),
                format!("unknown replica source `{other}`: use \"local\" or \"static\""),
            );
            return None;
        }
        None => {
            c.error(
                path.key("source"),
                "missing required key `source` (\"local\" or \"static\")",
            );
            return None;
        }
    }
    let mut addresses = Vec::new();
    for (i, text) in raw.addresses.unwrap_or_default().iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => addresses.push(addr),
            _ => c.error(
                path.key("addresses").index(i),
                format!("`{text}` is not an `ip:port` address"),
            ),
        }
    }
    Some(ReplicaSource::Static { addresses })
}

fn environment(c: &mut Checker<'_>, path: &ConfigPath, raw: RawEnvironment) -> Option<Environment> {
    let name = c.required(path, "name", &raw.name).map(str::to_owned);
    if let Some(name) = &name
        && !is_environment_name(name)
    {
        c.error(
            path.key("name"),
            format!("environment name `{name}` must be 1-64 lowercase letters, digits, `-` or `_`"),
        );
    }
    let autoscaling = raw
        .autoscaling
        .map(|a| autoscaling(c, &path.key("autoscaling"), a));
    let promotion = raw.promotion.unwrap_or_default();
    let promotion_path = path.key("promotion");
    let d = Promotion::default();
    let cleanup_strategy = match promotion.cleanup_strategy.as_deref() {
        None | Some("SCALE_TO_ZERO") => CleanupStrategy::ScaleToZero,
        Some("KEEP") => CleanupStrategy::Keep,
        Some("DEACTIVATE") => CleanupStrategy::Deactivate,
        Some(other) => {
            c.error(
                promotion_path.key("cleanup_strategy"),
                format!(
                    "unknown cleanup strategy `{other}`: use SCALE_TO_ZERO, KEEP or DEACTIVATE"
                ),
            );
            d.cleanup_strategy
        }
    };
    let promotion = Promotion {
        cleanup_strategy,
        ramp_up: promotion.ramp_up.unwrap_or(d.ramp_up),
        ramp_up_duration: c.ranged(
            &promotion_path,
            "ramp_up_duration",
            promotion.ramp_up_duration,
            d.ramp_up_duration,
            1,
            86_400,
        ),
        rollback: promotion
            .rollback
            .map(|r| super::rollout::rollback(c, &promotion_path.key("rollback"), r)),
    };
    let rollout = match raw.rollout {
        Some(r) => Some(super::rollout::rollout(c, &path.key("rollout"), r)?),
        None => None,
    };
    Some(Environment {
        name: name?,
        deployment: raw.deployment,
        autoscaling,
        promotion,
        rollout,
    })
}

fn is_model_id(id: &str) -> bool {
    (1..=57).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_deployment_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && id != "development"
        && id != PRODUCTION
}

fn is_environment_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
