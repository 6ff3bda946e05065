//! Canary rollouts: an environment's `rollout` table (the rollout in
//! progress) and its promotion settings' `rollback` guard.

use std::time::Duration;

use super::{Checker, secs};
use crate::model::{Deployment, Environment, RollbackGuard, Rollout};
use crate::path::ConfigPath;
use crate::raw::{RawRollback, RawRollout};

/// `promotion.rollback`: every key optional, defaults when absent.
pub(super) fn rollback(c: &mut Checker<'_>, path: &ConfigPath, raw: RawRollback) -> RollbackGuard {
    let d = RollbackGuard::default();
    let default_p99 = u32::try_from(d.max_p99_increase.as_millis()).unwrap_or(u32::MAX);
    let max_error_rate_increase = match raw.max_error_rate_increase_pct {
        None => d.max_error_rate_increase,
        // Written as a percentage, kept as a fraction.
        Some(pct) if (0.0..=100.0).contains(&pct) => pct / 100.0,
        Some(pct) => {
            c.error(
                path.key("max_error_rate_increase_pct"),
                format!("`max_error_rate_increase_pct` is {pct}; it must be between 0 and 100"),
            );
            d.max_error_rate_increase
        }
    };
    RollbackGuard {
        max_error_rate_increase,
        max_p99_increase: Duration::from_millis(u64::from(c.ranged(
            path,
            "max_p99_increase_ms",
            raw.max_p99_increase_ms,
            default_p99,
            0,
            600_000,
        ))),
        min_requests: c.ranged(
            path,
            "min_requests",
            raw.min_requests,
            d.min_requests,
            1,
            1_000_000,
        ),
    }
}

/// An environment's `rollout` table on its own: every key required. Which
/// deployments it names is checked by [`check_deployments`].
pub(super) fn rollout(c: &mut Checker<'_>, path: &ConfigPath, raw: RawRollout) -> Option<Rollout> {
    let deployment = c
        .required(path, "deployment", &raw.deployment)
        .map(str::to_owned);
    let started_at_ms = match raw.started_at_ms {
        None => {
            c.error(
                path.key("started_at_ms"),
                "missing required key `started_at_ms` (milliseconds since the Unix epoch)",
            );
            None
        }
        Some(ms) => u64::try_from(ms).ok().or_else(|| {
            c.error(
                path.key("started_at_ms"),
                format!("`started_at_ms` is {ms}; it must be at least 0 (milliseconds since the Unix epoch)"),
            );
            None
        }),
    };
    let duration = c.required_ranged(path, "duration_secs", raw.duration_secs, 1, 86_400);
    Some(Rollout {
        deployment: deployment?,
        started_at_ms: started_at_ms?,
        duration: secs(duration?),
    })
}

/// A rollout moves traffic from the deployment the environment serves to
/// another active deployment of the same model (`deployments`).
pub(super) fn check_deployments(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    env: &Environment,
    rollout: &Rollout,
    deployments: &[Deployment],
) {
    let target = &rollout.deployment;
    match &env.deployment {
        None => c.error(
            path.clone(),
            format!(
                "environment `{}` serves no deployment to roll out from: set its `deployment` first",
                env.name
            ),
        ),
        Some(current) if current == target => c.error(
            path.key("deployment"),
            format!(
                "the rollout's deployment `{target}` is the one environment `{}` already serves",
                env.name
            ),
        ),
        Some(_) => {}
    }
    match deployments.iter().find(|d| &d.id == target) {
        Some(d) if !d.active => c.error(
            path.key("deployment"),
            format!(
                "the rollout of environment `{}` moves traffic to inactive deployment `{target}`; activate it first",
                env.name
            ),
        ),
        Some(_) => {}
        None => c.error(
            path.key("deployment"),
            format!(
                "the rollout of environment `{}` names unknown deployment `{target}`",
                env.name
            ),
        ),
    }
}
