//! The scale-from-zero scenario: `requests` requests fired at once, one
//! per connection (all connected first, so connecting is not measured),
//! and each one's time to first byte (the response head) from the moment
//! they were fired. Against a deployment at zero replicas the gateway parks
//! them and wakes one: the sorted times show how the wake-up and the
//! release of the queue spread over the burst.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use crate::client::{self, Target};
use crate::stats::Stats;

#[derive(Debug)]
pub(crate) struct Fired {
    /// Time to first byte of every answered request, ascending.
    pub(crate) ttfb: Vec<Duration>,
    /// Latency to the end of each response, statuses, transport errors.
    pub(crate) stats: Stats,
}

/// Fires `requests` at once and waits up to `limit` for their answers
/// (those still unanswered then count as `unfinished`).
pub(crate) async fn fire(target: Arc<Target>, requests: usize, limit: Duration) -> Fired {
    let mut stats = Stats::default();
    let connecting: Vec<_> = (0..requests)
        .map(|_| {
            let target = Arc::clone(&target);
            tokio::spawn(async move { client::connect(&target).await })
        })
        .collect();
    let mut senders = Vec::with_capacity(requests);
    for c in connecting {
        match c.await.expect("connect task") {
            Ok(sender) => senders.push(sender),
            Err(kind) => stats.error(kind),
        }
    }
    let fired = Instant::now();
    let sending: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let target = Arc::clone(&target);
            tokio::spawn(async move {
                timeout(limit, client::exchange(&mut sender, &target, None)).await
            })
        })
        .collect();
    let mut ttfb = Vec::with_capacity(requests);
    for s in sending {
        match s.await.expect("request task") {
            Ok(Ok(answer)) => {
                ttfb.push(answer.head_at - fired);
                stats.answer(Instant::now() - fired, answer);
            }
            Ok(Err(kind)) => stats.error(kind),
            Err(_) => stats.error("unfinished"),
        }
    }
    ttfb.sort();
    Fired { ttfb, stats }
}
