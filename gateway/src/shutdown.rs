//! Graceful shutdown. Pingora stops accepting on SIGTERM and then sleeps for
//! the whole grace period; we count in-flight requests and exit as soon as
//! the last one has finished, so the grace period is a bound, not a wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use tokio::sync::broadcast;

/// Requests being handled right now.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    /// The drain watcher, once the grace period has begun: the request
    /// that takes the count to zero wakes it (before that, nobody waits and
    /// reaching zero costs one more load).
    watcher: OnceLock<Thread>,
}

impl InFlight {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    /// The current count.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Counts one request unless `limit` are counted already: the global
    /// in-flight cap ([`crate::overload`]) takes its places in this count.
    /// One atomic add, as `enter`; arrivals racing at the cap may see it
    /// reached a moment early, never late.
    pub fn try_enter(self: &Arc<Self>, limit: usize) -> Option<InFlightGuard> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightGuard(Arc::clone(self)))
    }
}

/// Holds one request in the [`InFlight`] count.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(watcher) = self.0.watcher.get()
        {
            watcher.unpark();
        }
    }
}

/// How long nothing must be in flight before the drain counts as done: a
/// keep-alive client sending requests back to back is not cut off in the
/// gap between two of them.
const SETTLE: Duration = Duration::from_millis(50);

/// Starts a thread that, once the grace period begins, exits the process as
/// soon as no request has been in flight for [`SETTLE`], after
/// `before_exit` (which stops the control plane and its replicas). It
/// sleeps until the last request ends (the guard wakes it), not on a timer.
pub fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    in_flight: Arc<InFlight>,
    before_exit: impl FnOnce() + Send + 'static,
) {
    let watcher = move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        // Registered before the first look at the count: a request ending
        // after it unparks this thread (a wake-up before `park` is kept).
        let _ = in_flight.watcher.set(std::thread::current());
        log::info!("draining: {} request(s) in flight", in_flight.get());
        loop {
            while in_flight.get() > 0 {
                std::thread::park();
            }
            std::thread::park_timeout(SETTLE);
            if in_flight.get() == 0 {
                break;
            }
        }
        log::info!("drained; exiting");
        before_exit();
        std::process::exit(0);
    };
    std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(watcher)
        .expect("spawn drain watcher");
}

/// Set once this process has handed its replicas over to a new one (a
/// binary upgrade, [`crate::upgrade`]): process-wide, as the signal is.
static UPGRADING: AtomicBool = AtomicBool::new(false);

/// Marks this process as draining for an upgrade.
pub fn set_upgrading() {
    UPGRADING.store(true, Ordering::Release);
}

/// Resolves when a parked request must give up because the process is
/// stopping: at SIGTERM (503 at once: the replicas stop with it). Never in
/// an upgrade's drain: the replicas stay, and the request waits for one
/// within its queue timeout, as it would have without the upgrade.
pub async fn parked_refused(shutdown: &mut ShutdownWatch) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
    if UPGRADING.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
}

/// Runs `tick` every `period` until the server shuts down: the loop of the
/// gateway's background services.
pub async fn every(period: Duration, mut shutdown: ShutdownWatch, mut tick: impl FnMut()) {
    let mut interval = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = interval.tick() => tick(),
            _ = shutdown.changed() => return,
        }
    }
}
