//! Sustained load over keep-alive connections, closed or open loop.
//!
//! Closed loop: each connection sends, reads the whole response, sends
//! again, until the schedule ends; latency runs from each send, and a
//! response counts in the phase it ends in (none if it ends after the run:
//! the run does not wait for it).
//!
//! Open loop: request `n` is due at the schedule's time for `n`, and the
//! connections are a pool: each free connection takes the next request
//! number and sleeps until it is due. (Dealing requests round-robin to
//! fixed connections instead would hold a request behind one slow answer
//! while other connections sit idle: a client artefact that dominated p99
//! at high rates.) When every connection is still waiting for an answer as
//! a request falls due, it goes out late and its latency runs from the due
//! time: the lateness the server caused counts (no coordinated omission).
//! A request taken ahead of time runs from its actual send: tokio's timer
//! wakes up to 1 ms late, and that slop is the client's, not the server's.
//! How late every request went out is reported apart, as the send lag (a
//! client short of CPU shows there). Every scheduled request is accounted
//! for in the phase it was due in: a response, a transport error, or
//! `unfinished` if it had no answer `grace` after the schedule ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;
use tokio::time::{Instant, timeout_at};

use crate::client::{self, Sender, Target};
use crate::schedule::Schedule;
use crate::stats::{self, Stats};

#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) target: Target,
    pub(crate) schedule: Schedule,
    pub(crate) connections: usize,
    /// Open loop: how long after the schedule ends answers may still come.
    pub(crate) grace: Duration,
    /// Count responses per value of this header.
    pub(crate) count_header: Option<HeaderName>,
    pub(crate) start: Instant,
    /// Open loop: the next request number a free connection takes.
    pub(crate) next: AtomicU64,
}

impl Load {
    fn open(&self) -> bool {
        self.schedule.phases().any(|p| p.rate.is_some())
    }

    fn end(&self) -> Instant {
        self.start + self.schedule.end()
    }
}

/// Runs the load; what each phase saw.
pub(crate) async fn run(load: Arc<Load>) -> anyhow::Result<Vec<Stats>> {
    let tasks: Vec<_> = (0..load.connections)
        .map(|_| {
            let load = Arc::clone(&load);
            if load.open() {
                tokio::spawn(async move { open(&load).await })
            } else {
                tokio::spawn(async move { closed(&load).await })
            }
        })
        .collect();
    let mut per_connection = Vec::with_capacity(tasks.len());
    for task in tasks {
        per_connection.push(task.await?);
    }
    Ok(stats::merge_phases(
        per_connection,
        load.schedule.phases().count(),
    ))
}

fn empty(load: &Load) -> Vec<Stats> {
    vec![Stats::default(); load.schedule.phases().count()]
}

async fn closed(load: &Load) -> Vec<Stats> {
    let mut stats = empty(load);
    let end = load.end();
    let phase_at = |t: Instant| load.schedule.phase_at(t - load.start);
    let mut sender: Option<Sender> = None;
    while Instant::now() < end {
        let sent = Instant::now();
        let result = timeout_at(end, async {
            let s = client::ready(&mut sender, &load.target).await?;
            client::exchange(s, &load.target, load.count_header.as_ref()).await
        })
        .await;
        let done = Instant::now();
        match result {
            Err(_) => break, // still in flight when the run ended
            Ok(Ok(answer)) => {
                if let Some(p) = phase_at(done) {
                    stats[p].answer(done - sent, answer);
                }
            }
            Ok(Err(kind)) => {
                sender = None;
                if let Some(p) = phase_at(done) {
                    stats[p].error(kind);
                }
                if kind == "connect" {
                    // Nothing listening: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    stats
}

async fn open(load: &Load) -> Vec<Stats> {
    let mut stats = empty(load);
    let deadline = load.end() + load.grace;
    // Connect ahead of the first due time, so that the first request does
    // not pay for it (if this fails, the first request retries).
    let mut sender = client::connect(&load.target).await.ok();
    loop {
        let n = load.next.fetch_add(1, Ordering::Relaxed);
        let Some((phase, due)) = load.schedule.due(n) else {
            break;
        };
        let due = load.start + due;
        let taken = Instant::now();
        if taken >= deadline {
            stats[phase].error("unfinished");
            continue;
        }
        tokio::time::sleep_until(due).await;
        let sent = Instant::now();
        stats[phase].lag(sent - due);
        let from = if taken > due { due } else { sent };
        let result = timeout_at(deadline, async {
            let s = client::ready(&mut sender, &load.target).await?;
            client::exchange(s, &load.target, load.count_header.as_ref()).await
        })
        .await;
        match result {
            Ok(Ok(answer)) => stats[phase].answer(Instant::now() - from, answer),
            Ok(Err(kind)) => {
                sender = None;
                stats[phase].error(kind);
            }
            Err(_) => {
                sender = None;
                stats[phase].error("unfinished");
            }
        }
    }
    stats
}
