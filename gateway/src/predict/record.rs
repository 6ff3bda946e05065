//! What a finished request leaves behind: its count and latencies in its
//! route's metrics, its outcome in the rollout guard, and (when sampled) an
//! access log line.

use std::sync::Arc;

use routing::telemetry::Finished;
use tokio::time::Instant;

use super::client::Client;
use super::{Gateway, RequestCtx};
use crate::access_log::Entry;

impl Gateway {
    /// Counts the request in its route's metrics, the rollout guard and the
    /// access log.
    pub(super) fn record(&self, client: &Client<'_>, ctx: &mut RequestCtx) {
        let now = Instant::now();
        let total = now.duration_since(ctx.started);
        let sent = client.status();
        // Feed the rollout guard: a 5xx, a broken response or no response
        // at all is a failure; a client's fault is not the replica's, and is
        // left out (its outcome and its latency).
        if let Some((runtime, side)) = &ctx.rollout
            && !ctx.client_fault
        {
            let failed = ctx.failed || sent.is_none_or(|s| s.is_server_error());
            runtime.stats().record(*side, failed, total);
        }
        let status = match sent {
            _ if ctx.client_left => 499,
            // The replica broke off its response: whatever its head said,
            // the client got a truncated one, counted as the replica's 502.
            Some(_) if ctx.failed => 502,
            sent => sent.map_or(0, |s| s.as_u16()),
        };
        let finished = Finished {
            at: now,
            status,
            request_bytes: ctx.body.bytes(),
            response_bytes: client.body_bytes_sent(),
            total,
            queue_wait: ctx.queue_wait,
            upstream: ctx
                .upstream_started
                .map(|at| ctx.upstream_done.unwrap_or(now).duration_since(at)),
            first_byte: ctx.first_byte,
        };
        let unrouted;
        let route = match &ctx.metrics {
            Some(route) => route,
            None => {
                unrouted = Arc::clone(self.routing.load().unrouted_metrics());
                &unrouted
            }
        };
        if self.request_metrics {
            route.record(&finished);
        }
        if let (Some(log), Some((request_id, _))) = (&self.access_log, ctx.request_id.take()) {
            log.log(Entry {
                at: std::time::SystemTime::now(),
                request_id,
                route: Arc::clone(route),
                replica: ctx.replica,
                status: finished.status,
                request_bytes: finished.request_bytes,
                response_bytes: finished.response_bytes,
                total,
                upstream: finished.upstream,
                queue: finished.queue_wait,
            });
        }
    }
}
