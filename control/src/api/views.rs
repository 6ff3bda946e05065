//! The JSON the API answers with: models, deployments (with status and
//! replica counts from the routing snapshot) and environments.

use config::{Autoscaling, CleanupStrategy, Deployment, DeploymentKind, Model, ReplicaSource};
use serde_json::{Value, json};

use crate::snapshot::{Snapshot, Target};

pub(super) fn model_view(m: &Model, snap: &Snapshot) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "deployments": m.deployments.iter().map(|d| deployment_view(m, d, snap)).collect::<Vec<_>>(),
        "environments": m.environments.iter().map(|e| environment_view(m, e, snap)).collect::<Vec<_>>(),
    })
}

/// Status and replica counts come from the routing snapshot: `desired` is
/// the configured replica count, `ready` those whose readiness probe passed.
pub(super) fn deployment_view(m: &Model, d: &Deployment, snap: &Snapshot) -> Value {
    let ReplicaSource::Static { addresses } = &d.replicas;
    let desired = if d.active { addresses.len() } else { 0 };
    let route = snap
        .model(&m.id)
        .ok()
        .and_then(|routes| routes.resolve(Target::Deployment(&d.id)).ok());
    let ready = route.map_or(0, |r| r.replicas().ready_count());
    let probed = route.map_or(0, |r| r.replicas().probed_count());
    let status = if !d.active {
        "INACTIVE"
    } else if desired == 0 {
        "SCALED_TO_ZERO"
    } else if ready > 0 {
        "ACTIVE"
    } else if probed < desired {
        "DEPLOYING"
    } else {
        "UNHEALTHY"
    };
    let environments: Vec<&str> = m
        .environments
        .iter()
        .filter(|e| e.deployment.as_deref() == Some(d.id.as_str()))
        .map(|e| e.name.as_str())
        .collect();
    json!({
        "id": d.id,
        "name": d.name,
        "is_development": d.kind == DeploymentKind::Development,
        "active": d.active,
        "status": status,
        "replicas": { "desired": desired, "ready": ready },
        "environments": environments,
        "predict_concurrency": d.predict_concurrency,
        "resources": d.resources.to_string(),
        "autoscaling_settings": autoscaling_view(&d.autoscaling),
        "effective_autoscaling_settings": autoscaling_view(&effective_autoscaling(m, d)),
    })
}

/// The settings that govern a deployment: those of an environment that
/// serves it (they apply once a promotion into it succeeded), else its own.
fn effective_autoscaling(m: &Model, d: &Deployment) -> Autoscaling {
    m.environments
        .iter()
        .filter(|e| e.deployment.as_deref() == Some(d.id.as_str()))
        .find_map(|e| e.autoscaling)
        .unwrap_or(d.autoscaling)
}

pub(super) fn environment_view(m: &Model, e: &config::Environment, snap: &Snapshot) -> Value {
    let current = e.deployment.as_deref().and_then(|id| m.deployment(id));
    json!({
        "name": e.name,
        "deployment": current.map(|d| deployment_view(m, d, snap)),
        "autoscaling_settings": e.autoscaling.as_ref().map(autoscaling_view),
        "promotion_settings": {
            "promotion_cleanup_strategy": match e.promotion.cleanup_strategy {
                CleanupStrategy::ScaleToZero => "SCALE_TO_ZERO",
                CleanupStrategy::Keep => "KEEP",
                CleanupStrategy::Deactivate => "DEACTIVATE",
            },
            "ramp_up_while_promoting": e.promotion.ramp_up,
            "ramp_up_duration_secs": e.promotion.ramp_up_duration,
        },
    })
}

fn autoscaling_view(a: &Autoscaling) -> Value {
    json!({
        "min_replica": a.min_replica,
        "max_replica": a.max_replica,
        "autoscaling_window": a.autoscaling_window,
        "scale_down_delay": a.scale_down_delay,
        "max_scale_down_rate": a.max_scale_down_rate,
        "concurrency_target": a.concurrency_target,
        "target_utilization_percentage": a.target_utilization_percentage,
    })
}
