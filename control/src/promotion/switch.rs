//! A promotion's decisions on the config: how many ready replicas the new
//! deployment must have before traffic moves, and the switch itself as one
//! edit (the environment's pointer and the cleanup of the previous
//! deployment).

use config::edit::EditError;
use config::{CleanupStrategy, Config};

use super::PromotionReason;

/// Ready replicas the new deployment needs: the current deployment's
/// `min_replica` (the environment's settings apply to what it serves), and
/// never fewer than one.
pub(super) fn needed_replicas(
    config: &Config,
    model: &str,
    environment: &str,
    deployment: &str,
) -> Result<usize, PromotionReason> {
    let m = config
        .model(model)
        .ok_or_else(|| PromotionReason::ModelDeleted(model.to_owned()))?;
    let target = m
        .deployment(deployment)
        .ok_or_else(|| PromotionReason::DeploymentDeleted(deployment.to_owned()))?;
    if !target.active {
        return Err(PromotionReason::DeploymentDeactivated(
            deployment.to_owned(),
        ));
    }
    let env = m
        .environment(environment)
        .ok_or_else(|| PromotionReason::EnvironmentDeleted(environment.to_owned()))?;
    let current_min = env
        .deployment
        .as_deref()
        .and_then(|id| m.deployment(id))
        .map_or(0, |current| {
            env.autoscaling.unwrap_or(current.autoscaling).min_replica
        });
    Ok(current_min.max(1) as usize)
}

/// The switch itself, as one edit: point the environment at the new
/// deployment and apply the cleanup strategy to the previous one (unless
/// another environment still serves it).
pub(super) fn switch(
    doc: &mut config::edit::ConfigDocument,
    model: &str,
    environment: &str,
    deployment: &str,
) -> Result<(), EditError> {
    let (previous, cleanup) = {
        let m = doc
            .config()
            .model(model)
            .ok_or_else(|| EditError::NotFound(format!("model `{model}`")))?;
        let env = m
            .environment(environment)
            .ok_or_else(|| EditError::NotFound(format!("environment `{environment}`")))?;
        let previous = env.deployment.clone().filter(|p| p != deployment);
        let shared = previous.as_deref().is_some_and(|p| {
            m.environments
                .iter()
                .any(|e| e.name != environment && e.deployment.as_deref() == Some(p))
        });
        (previous.filter(|_| !shared), env.promotion.cleanup_strategy)
    };
    doc.point_environment(model, environment, deployment)?;
    if let Some(previous) = previous {
        match cleanup {
            CleanupStrategy::Keep => {}
            CleanupStrategy::Deactivate => {
                doc.set_deployment_active(model, &previous, false)?;
            }
            CleanupStrategy::ScaleToZero => {
                let to_zero = config::edit::AutoscalingPatch {
                    min_replica: Some(0),
                    ..Default::default()
                };
                doc.set_autoscaling(
                    model,
                    config::edit::AutoscalingScope::Deployment(previous),
                    to_zero,
                )?;
            }
        }
    }
    Ok(())
}
