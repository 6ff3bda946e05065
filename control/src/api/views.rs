//! The JSON the API answers with: models, deployments (with status and
//! replica counts from the routing snapshot) and environments.

use config::{Autoscaling, CleanupStrategy, Deployment, DeploymentKind, Model, ReplicaSource};
use serde_json::{Value, json};

use crate::scaling::effective_autoscaling;
use routing::ReplicaCounts;
use routing::snapshot::Snapshot;
use routing::telemetry::RecentSummary;

pub(super) fn model_view(m: &Model, snap: &Snapshot) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "deployments": m.deployments.iter().map(|d| deployment_view(m, d, snap)).collect::<Vec<_>>(),
        "environments": m.environments.iter().map(|e| environment_view(m, e, snap)).collect::<Vec<_>>(),
    })
}

/// Status and replica counts come from the deployment's pool (see
/// [`ReplicaCounts`]), with the controller's `pending_reason`.
pub(super) fn deployment_view(m: &Model, d: &Deployment, snap: &Snapshot) -> Value {
    let pool = snap.deployment(&m.id, &d.id).map(|r| r.pool());
    let ReplicaCounts {
        desired,
        ready,
        probed,
        scale,
    } = ReplicaCounts::of(d, pool.map(|p| &**p));
    let instances: Vec<Value> = pool.map_or_else(Vec::new, |p| {
        p.replicas()
            .replicas()
            .iter()
            .map(|r| {
                json!({
                    "address": r.addr().to_string(),
                    "health": format!("{:?}", r.health()).to_uppercase(),
                    "in_flight": r.outstanding(),
                    "ejections_in_a_row": r.ejections(),
                    "latency_ms": r.latency().map(|l| l.as_secs_f64() * 1e3),
                })
            })
            .collect()
    });
    let status = if !d.active {
        "INACTIVE"
    } else if scale.failed {
        "DEPLOY_FAILED"
    } else if ready > 0 {
        "ACTIVE"
    } else if desired == 0 {
        "SCALED_TO_ZERO"
    } else if d.replicas == ReplicaSource::Local {
        if scale.pending > 0 && scale.starting == 0 {
            "DEPLOYING"
        } else {
            "WAKING_UP"
        }
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
        "replicas": {
            "desired": desired,
            "ready": ready,
            "starting": scale.starting,
            "pending": scale.pending,
            "pending_reason": scale.pending_reason.as_ref().map(ToString::to_string),
            "last_error": scale.last_error,
            "crashes": scale.crashes,
            "instances": instances,
        },
        "queue": queue_view(pool.map(|p| &**p)),
        "environments": environments,
        "predict_concurrency": d.predict_concurrency,
        "resources": d.resources.to_string(),
        "autoscaling_settings": autoscaling_view(&d.autoscaling),
        "effective_autoscaling_settings": autoscaling_view(&effective_autoscaling(m, d)),
    })
}

pub(super) fn environment_view(m: &Model, e: &config::Environment, snap: &Snapshot) -> Value {
    let current = e.deployment.as_deref().and_then(|id| m.deployment(id));
    // The persisted rollout, as every gateway reading this config splits.
    let rollout = e.rollout.as_ref().map(|r| {
        let phase = routing::rollout::Phase::of(r, routing::rollout::now_ms());
        json!({
            "deployment_id": r.deployment,
            "started_at_ms": r.started_at_ms,
            "duration_secs": r.duration.as_secs(),
            "stage": match phase {
                routing::rollout::Phase::Stage(k) => k,
                routing::rollout::Phase::Complete => routing::rollout::STAGES,
            },
            "stages": routing::rollout::STAGES,
            "percent_to_new": phase.percent(),
        })
    });
    json!({
        "name": e.name,
        "deployment": current.map(|d| deployment_view(m, d, snap)),
        "rollout": rollout,
        "autoscaling_settings": e.autoscaling.as_ref().map(autoscaling_view),
        "promotion_settings": {
            "promotion_cleanup_strategy": match e.promotion.cleanup_strategy {
                CleanupStrategy::ScaleToZero => "SCALE_TO_ZERO",
                CleanupStrategy::Keep => "KEEP",
                CleanupStrategy::Deactivate => "DEACTIVATE",
            },
            "ramp_up_while_promoting": e.promotion.ramp_up,
            "ramp_up_duration_secs": e.promotion.ramp_up_duration,
            "rollback": e.promotion.rollback.map(|g| json!({
                "max_error_rate_increase_pct": g.max_error_rate_increase * 100.0,
                "max_p99_increase_ms": g.max_p99_increase.as_millis() as u64,
                "min_requests": g.min_requests,
            })),
        },
    })
}

fn queue_view(pool: Option<&routing::pool::Pool>) -> Value {
    let [parked_total, timed_out, client_closed, refused] =
        pool.map_or([0; 4], |p| p.counters().get());
    json!({
        "parked": pool.map_or(0, |p| p.parked()),
        "in_flight": pool.map_or(0, |p| p.in_flight()),
        "parked_total": parked_total,
        "timed_out": timed_out,
        "client_closed": client_closed,
        "refused": refused,
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

/// A recent-window summary, with the replicas of the deployment it is about.
pub(super) fn metrics_view(s: RecentSummary, deployment: Option<(&str, ReplicaCounts)>) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    json!({
        "window_secs": s.window.as_secs_f64(),
        "requests": s.requests,
        "requests_per_sec": s.rate(),
        "server_errors": s.server_errors,
        "client_errors": s.client_errors,
        "error_rate": s.error_rate(),
        "latency_ms": { "p50": ms(s.p50), "p90": ms(s.p90), "p99": ms(s.p99) },
        "deployment": deployment.as_ref().map(|(id, _)| *id),
        "replicas": deployment.map(|(_, r)| json!({
            "desired": r.desired,
            "ready": r.ready,
            "starting": r.scale.starting,
            "pending": r.scale.pending,
        })),
    })
}
