//! What the edits look up and name: deployments by id or alias, the
//! environments that serve them, and new deployments' names and ids.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{DEVELOPMENT, EditError};
use crate::model::{Deployment, DeploymentKind, Environment, Model, PRODUCTION};

pub(super) fn deployment_of<'m>(
    model: &'m Model,
    reference: &str,
) -> Result<&'m Deployment, EditError> {
    let found = match reference {
        DEVELOPMENT => development_of(model),
        PRODUCTION => model
            .environment(PRODUCTION)
            .and_then(|e| e.deployment.as_deref())
            .and_then(|id| model.deployment(id)),
        id => model.deployment(id),
    };
    found.ok_or_else(|| {
        EditError::NotFound(match reference {
            DEVELOPMENT => format!("development deployment of model `{}`", model.id),
            PRODUCTION => format!(
                "deployment of the production environment of model `{}`",
                model.id
            ),
            id => format!("deployment `{id}` of model `{}`", model.id),
        })
    })
}

/// A deployment an environment may be pointed at: it exists and is active.
pub(super) fn servable<'m>(model: &'m Model, reference: &str) -> Result<&'m Deployment, EditError> {
    let d = deployment_of(model, reference)?;
    if !d.active {
        return Err(EditError::Conflict(format!(
            "deployment `{}` of model `{}` is inactive; activate it first",
            d.id, model.id
        )));
    }
    Ok(d)
}

pub(super) fn development_of(model: &Model) -> Option<&Deployment> {
    model
        .deployments
        .iter()
        .find(|d| d.kind == DeploymentKind::Development)
}

pub(super) fn environment_of<'m>(
    model: &'m Model,
    name: &str,
) -> Result<&'m Environment, EditError> {
    model
        .environment(name)
        .ok_or_else(|| EditError::NotFound(format!("environment `{name}` of model `{}`", model.id)))
}

/// The first environment serving deployment `id`.
pub(super) fn serving<'m>(model: &'m Model, id: &str) -> Option<&'m Environment> {
    model
        .environments
        .iter()
        .find(|e| e.deployment.as_deref() == Some(id))
}

/// The first environment with a rollout to deployment `id`.
pub(super) fn rolling_out_to<'m>(model: &'m Model, id: &str) -> Option<&'m Environment> {
    model
        .environments
        .iter()
        .find(|e| e.rollout.as_ref().is_some_and(|r| r.deployment == id))
}

/// The ids and names of the regular deployments after `id`: those without
/// a `name` key are named by their position, which a deletion shifts.
pub(super) fn positional_names_after(model: &Model, id: &str) -> Vec<(String, String)> {
    model
        .deployments
        .iter()
        .skip_while(|d| d.id != id)
        .skip(1)
        .filter(|d| d.kind == DeploymentKind::Regular)
        .map(|d| (d.id.clone(), d.name.clone()))
        .collect()
}

pub(super) fn one_resource_form(instance_type: bool, resources: bool) -> Result<(), EditError> {
    if instance_type && resources {
        return Err(EditError::BadRequest(
            "set either `instance_type` or `resources`, not both".to_owned(),
        ));
    }
    Ok(())
}

pub(super) fn non_empty_name(name: &str) -> Result<&str, EditError> {
    if name.trim().is_empty() {
        return Err(EditError::BadRequest(
            "a deployment name must not be empty".to_owned(),
        ));
    }
    Ok(name)
}

/// `deployment-N`, N one past the highest such name in the model.
pub(super) fn next_deployment_name(model: &Model) -> String {
    let highest = model
        .deployments
        .iter()
        .filter_map(|d| d.name.strip_prefix("deployment-"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("deployment-{}", highest + 1)
}

/// 8 random lowercase letters and digits, not yet a deployment id of the model.
pub(super) fn unused_id(model: &Model) -> String {
    loop {
        let id = random_id();
        if model.deployment(&id).is_none() {
            return id;
        }
    }
}

pub(super) fn random_id() -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // 36^8 is tiny next to 2^64, so taking digits in base 36 is unbiased
    // enough for ids.
    let mut n = random_u64();
    (0..8)
        .map(|_| {
            let digit = ALPHABET[(n % 36) as usize];
            n /= 36;
            char::from(digit)
        })
        .collect()
}

pub(super) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    // Ids must be unique, not secret, and `unused_id` retries on a clash:
    // without an OS entropy source the clock will do.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
