//! Scrape-time metrics: the state the control plane keeps anyway (queues,
//! replica counts, the autoscaler's last decision, canary stages), copied
//! into gauges and counters when `/metrics` is read, so the hot path pays
//! nothing for them.

use metrics::{Label, counter, gauge};

use routing::Health;
use routing::ReplicaCounts;
use routing::outlier::Ejection;
use routing::pool::Overload;
use routing::retry::RetryReason;
use routing::rollout::{self, Phase};
use routing::snapshot::Snapshot;
use routing::telemetry;

/// Sets every scrape-time metric from `snapshot`.
pub fn collect(snapshot: &Snapshot) {
    let config = snapshot.config();
    let now_ms = rollout::now_ms();
    for model in &config.models {
        for d in &model.deployments {
            let Some(route) = snapshot.deployment(&model.id, &d.id) else {
                continue;
            };
            let pool = route.pool();
            let labels = [
                Label::new("model", model.id.clone()),
                Label::new("deployment", d.id.clone()),
            ];
            let with = |extra: Label| {
                let mut l = labels.to_vec();
                l.push(extra);
                l
            };
            gauge!(telemetry::IN_FLIGHT, labels.to_vec()).set(pool.in_flight() as f64);
            gauge!(telemetry::QUEUE_PARKED, labels.to_vec()).set(pool.parked() as f64);
            let [parked, timed_out, client_closed, _] = pool.counters().get();
            counter!(telemetry::QUEUE_PARKED_TOTAL, labels.to_vec()).absolute(parked);
            counter!(telemetry::QUEUE_TIMEOUTS, labels.to_vec()).absolute(timed_out);
            counter!(telemetry::QUEUE_CLIENT_CLOSED, labels.to_vec()).absolute(client_closed);
            for why in Overload::ALL {
                counter!(
                    telemetry::QUEUE_REJECTIONS,
                    with(Label::from_static_parts("reason", why.label()))
                )
                .absolute(pool.counters().refused(why));
            }
            let counts = ReplicaCounts::of(d, Some(pool));
            let status = &counts.scale;
            gauge!(telemetry::REPLICAS_DESIRED, labels.to_vec()).set(counts.desired as f64);
            gauge!(telemetry::REPLICAS_READY, labels.to_vec()).set(counts.ready as f64);
            gauge!(telemetry::REPLICAS_STARTING, labels.to_vec()).set(status.starting);
            gauge!(telemetry::REPLICAS_PENDING, labels.to_vec()).set(status.pending);
            counter!(telemetry::REPLICA_RESTARTS, labels.to_vec()).absolute(status.crashes);
            let ejected = pool
                .replicas()
                .replicas()
                .iter()
                .filter(|r| r.health() == Health::Ejected)
                .count();
            gauge!(telemetry::REPLICAS_EJECTED, labels.to_vec()).set(ejected as f64);
            for why in Ejection::ALL {
                counter!(
                    telemetry::REPLICA_EJECTIONS,
                    with(Label::from_static_parts("reason", why.label()))
                )
                .absolute(pool.ejections(why));
            }
            let budget = pool.retry_budget();
            for why in RetryReason::ALL {
                counter!(
                    telemetry::RETRIES,
                    with(Label::from_static_parts("reason", why.label()))
                )
                .absolute(budget.retries(why));
            }
            counter!(telemetry::RETRY_BUDGET_EXHAUSTED, labels.to_vec())
                .absolute(budget.exhausted());
            gauge!(telemetry::AUTOSCALER_STABLE, labels.to_vec()).set(status.stable_signal);
            gauge!(telemetry::AUTOSCALER_BURST, labels.to_vec()).set(status.burst_signal);
            gauge!(telemetry::AUTOSCALER_BURST_MODE, labels.to_vec()).set(if status.burst_mode {
                1.0
            } else {
                0.0
            });
        }
        for e in &model.environments {
            let labels = vec![
                Label::new("model", model.id.clone()),
                Label::new("environment", e.name.clone()),
            ];
            let (stage, percent) = match e.rollout.as_ref().map(|r| Phase::of(r, now_ms)) {
                Some(Phase::Stage(k)) => (k, Phase::Stage(k).percent()),
                Some(Phase::Complete) => (rollout::STAGES, 100),
                None => (0, 0),
            };
            gauge!(telemetry::CANARY_STAGE, labels.clone()).set(stage);
            gauge!(telemetry::CANARY_PERCENT, labels).set(percent);
        }
    }
}
