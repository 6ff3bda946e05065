//! Edits for canary rollouts: the environment's persisted `rollout` table.

use std::time::Duration;

use super::lookup::*;
use super::tree::{self, Form};
use super::{Changed, ConfigDocument, EditError, environment_table, kv};

impl ConfigDocument {
    /// Starts (or replaces) a canary rollout in an environment: traffic
    /// moves from the deployment it serves to `deployment` (an id or alias;
    /// active, and not the one it serves) in 10 equal stages over
    /// `duration` (whole seconds, 1 s to 24 h), from `started_at_ms`
    /// (milliseconds since the Unix epoch). Writes the environment's
    /// `rollout` table; the routing is the caller's.
    pub fn start_rollout(
        &mut self,
        model: &str,
        environment: &str,
        deployment: &str,
        started_at_ms: u64,
        duration: Duration,
    ) -> Result<Changed, EditError> {
        let m = self.model(model)?;
        let env = environment_of(m, environment)?;
        let id = servable(m, deployment)?.id.clone();
        match env.deployment.as_deref() {
            None => {
                return Err(EditError::Conflict(format!(
                    "environment `{environment}` of model `{model}` serves no deployment to roll out from; point it at one first"
                )));
            }
            Some(current) if current == id => {
                return Err(EditError::Conflict(format!(
                    "environment `{environment}` of model `{model}` already serves deployment `{id}`"
                )));
            }
            Some(_) => {}
        }
        let started_at_ms = i64::try_from(started_at_ms).map_err(|_| {
            EditError::BadRequest(format!(
                "a rollout's start ({started_at_ms} ms) does not fit a TOML integer"
            ))
        })?;
        if duration.subsec_nanos() != 0 {
            return Err(EditError::BadRequest(format!(
                "a rollout's duration is whole seconds, not {duration:?}"
            )));
        }
        // Its range is checked by validation, with the other ranges.
        let duration_secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        let values = vec![
            kv("deployment", id),
            kv("started_at_ms", started_at_ms),
            kv("duration_secs", duration_secs),
        ];
        self.change(|doc| {
            let mut entry = environment_table(doc, model, environment)?;
            tree::replace_table(&mut entry, "rollout", values, Form::Section);
            Ok(())
        })
    }

    /// Ends an environment's rollout, wherever it stands: removes its
    /// `rollout` table (`Unchanged` when it has none). Completing a rollout
    /// is this and [`point_environment`](Self::point_environment) at its
    /// deployment, in that order (an environment cannot roll out to the
    /// deployment it serves).
    pub fn clear_rollout(&mut self, model: &str, environment: &str) -> Result<Changed, EditError> {
        let m = self.model(model)?;
        if environment_of(m, environment)?.rollout.is_none() {
            return Ok(Changed::Unchanged);
        }
        self.change(|doc| {
            tree::remove(&mut environment_table(doc, model, environment)?, "rollout");
            Ok(())
        })
    }
}
