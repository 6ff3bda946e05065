//! How a promotion ends, and why when it does not switch the environment:
//! typed, so the API's `reason` and the log say the same thing and tests
//! and callers can match on the cause rather than on text.

use std::sync::Arc;
use std::time::Duration;

use routing::rollout::Rollback;

use crate::store::StoreError;

use super::PromotionStatus;

/// How a promotion ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// The environment points at the new deployment.
    Succeeded,
    /// Stopped before the switch; traffic stays with the current deployment.
    /// With a reason when something other than a cancel call stopped it.
    Cancelled(Option<PromotionReason>),
    /// Gave up; the environment kept its deployment.
    Failed(PromotionReason),
    /// The rollback guard removed the rollout.
    RolledBack(Rollback),
}

impl Outcome {
    /// The status it leaves and the reason it gives.
    pub(super) fn into_parts(self) -> (PromotionStatus, Option<PromotionReason>) {
        match self {
            Self::Succeeded => (PromotionStatus::Succeeded, None),
            Self::Cancelled(reason) => (PromotionStatus::Cancelled, reason),
            Self::Failed(reason) => (PromotionStatus::Failed, Some(reason)),
            Self::RolledBack(why) => (
                PromotionStatus::RolledBack,
                Some(PromotionReason::RolledBack(why)),
            ),
        }
    }
}

/// Why a promotion ended without switching.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PromotionReason {
    /// The model was deleted meanwhile.
    #[error("model `{0}` was deleted")]
    ModelDeleted(String),
    /// The deployment being promoted was deleted.
    #[error("deployment `{0}` was deleted")]
    DeploymentDeleted(String),
    /// The deployment being promoted was deactivated.
    #[error("deployment `{0}` was deactivated")]
    DeploymentDeactivated(String),
    /// The environment was deleted.
    #[error("environment `{0}` was deleted")]
    EnvironmentDeleted(String),
    /// The new deployment did not get enough ready replicas in time.
    #[error("not enough ready replicas after {0:?}")]
    NotReady(Duration),
    /// Someone removed the rollout from the config by hand.
    #[error("the rollout was removed from the config")]
    RolloutRemoved,
    /// The rollback guard's verdict.
    #[error("{0}")]
    RolledBack(Rollback),
    /// The guard rolled back, but the edit removing the rollout failed.
    #[error("{why}; and removing the rollout failed: {error}")]
    RollbackNotWritten {
        /// The guard's verdict.
        why: Rollback,
        /// The failed edit.
        error: EditFailure,
    },
    /// A config edit the promotion needed failed.
    #[error(transparent)]
    Edit(EditFailure),
    /// The promotion's record vanished (cannot happen while it runs).
    #[error("lost its state")]
    LostState,
}

/// A config edit that failed, shared so the reason stays `Clone`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EditFailure {
    /// The store refused or could not write it.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The blocking task writing it did not finish (it panicked).
    #[error("the edit did not finish: {0}")]
    Aborted(Arc<str>),
}
