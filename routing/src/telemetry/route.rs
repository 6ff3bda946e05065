//! The metric handles of one route: a (model, environment, deployment)
//! triple, resolved once so a request records with atomic adds only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Label};
use tokio::time::Instant;

use super::RecentStats;

/// Status codes with a series of their own; any other is counted as
/// `code="other"` in its class.
const CODES: [u16; 19] = [
    200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 499, 500, 502, 503, 504,
];
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// How one request ended, as the hot path measured it.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// When it ended.
    pub at: Instant,
    /// The status sent; 499 when the client left first.
    pub status: u16,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Arrival to the end.
    pub total: Duration,
    /// Time parked in the activation queue, if it parked.
    pub queue_wait: Option<Duration>,
    /// Time at the replica, if one was reached.
    pub upstream: Option<Duration>,
    /// Arrival to the replica's response head, if there was one.
    pub first_byte: Option<Duration>,
}

/// A route's handles (registered on its first request, so idle routes cost
/// no series) and the recent-window statistics it feeds.
#[derive(Debug)]
pub struct RouteMetrics {
    labels: [Label; 3],
    handles: OnceLock<Handles>,
    deployment: Option<Arc<RecentStats>>,
    environment: Option<Arc<RecentStats>>,
}

#[derive(Debug)]
struct Handles {
    codes: [OnceLock<Counter>; CODES.len()],
    others: [OnceLock<Counter>; CLASSES.len()],
    request_bytes: Counter,
    response_bytes: Counter,
    total: Histogram,
    upstream: Histogram,
    overhead: Histogram,
    first_byte: Histogram,
    queue_wait: Histogram,
}

impl RouteMetrics {
    /// Handles labelled `model`, `environment`, `deployment` (empty when
    /// they do not apply), counting into the deployment's and the
    /// environment's recent stats when given.
    pub fn new(
        model: &str,
        environment: &str,
        deployment: &str,
        deployment_stats: Option<Arc<RecentStats>>,
        environment_stats: Option<Arc<RecentStats>>,
    ) -> Self {
        Self {
            labels: [
                Label::new("model", model.to_owned()),
                Label::new("environment", environment.to_owned()),
                Label::new("deployment", deployment.to_owned()),
            ],
            handles: OnceLock::new(),
            deployment: deployment_stats,
            environment: environment_stats,
        }
    }

    /// `old` when it has the same labels and statistics (its handles are
    /// then resolved already), else new ones.
    pub fn reuse_or_new(
        old: Option<&Arc<Self>>,
        model: &str,
        environment: &str,
        deployment: &str,
        deployment_stats: Option<&Arc<RecentStats>>,
        environment_stats: Option<&Arc<RecentStats>>,
    ) -> Arc<Self> {
        let same_stats = |a: &Option<Arc<RecentStats>>, b: Option<&Arc<RecentStats>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if let Some(old) = old
            && old.labels[0].value() == model
            && old.labels[1].value() == environment
            && old.labels[2].value() == deployment
            && same_stats(&old.deployment, deployment_stats)
            && same_stats(&old.environment, environment_stats)
        {
            return Arc::clone(old);
        }
        Arc::new(Self::new(
            model,
            environment,
            deployment,
            deployment_stats.cloned(),
            environment_stats.cloned(),
        ))
    }

    /// The model label.
    pub fn model(&self) -> &str {
        self.labels[0].value()
    }

    /// The environment label (empty when the request named a deployment).
    pub fn environment(&self) -> &str {
        self.labels[1].value()
    }

    /// The deployment label.
    pub fn deployment(&self) -> &str {
        self.labels[2].value()
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let histogram = |name: &'static str| metrics::histogram!(name, self.labels.to_vec());
            let counter = |name: &'static str| metrics::counter!(name, self.labels.to_vec());
            Handles {
                codes: std::array::from_fn(|_| OnceLock::new()),
                others: std::array::from_fn(|_| OnceLock::new()),
                request_bytes: counter(super::REQUEST_BYTES),
                response_bytes: counter(super::RESPONSE_BYTES),
                total: histogram(super::REQUEST_DURATION),
                upstream: histogram(super::UPSTREAM_DURATION),
                overhead: histogram(super::OVERHEAD_DURATION),
                first_byte: histogram(super::TIME_TO_FIRST_BYTE),
                queue_wait: histogram(super::QUEUE_WAIT),
            }
        })
    }

    fn requests<'a>(&self, handles: &'a Handles, status: u16) -> &'a Counter {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => CLASSES.len() - 1,
        };
        let (slot, code) = match CODES.binary_search(&status) {
            Ok(i) => (&handles.codes[i], CODE_LABELS[i]),
            Err(_) => (&handles.others[class], "other"),
        };
        slot.get_or_init(|| {
            let mut labels = self.labels.to_vec();
            labels.push(Label::from_static_parts("code", code));
            labels.push(Label::from_static_parts("class", CLASSES[class]));
            metrics::counter!(super::REQUESTS, labels)
        })
    }

    /// Records a finished request.
    pub fn record(&self, f: &Finished) {
        let h = self.handles();
        self.requests(h, f.status).increment(1);
        h.request_bytes.increment(f.request_bytes);
        h.response_bytes.increment(f.response_bytes);
        h.total.record(f.total);
        let upstream = f.upstream.unwrap_or_default();
        let queued = f.queue_wait.unwrap_or_default();
        if let Some(upstream) = f.upstream {
            h.upstream.record(upstream);
        }
        if let Some(first_byte) = f.first_byte {
            h.first_byte.record(first_byte);
        }
        if let Some(wait) = f.queue_wait {
            h.queue_wait.record(wait);
        }
        h.overhead
            .record(f.total.saturating_sub(upstream).saturating_sub(queued));
        for stats in [&self.deployment, &self.environment].into_iter().flatten() {
            stats.record(f.at, f.status, f.total);
        }
    }
}

/// [`CODES`] as label values.
const CODE_LABELS: [&str; CODES.len()] = [
    "200", "201", "202", "204", "400", "401", "403", "404", "405", "408", "409", "413", "422",
    "429", "499", "500", "502", "503", "504",
];
