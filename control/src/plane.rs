//! The control plane's one runtime and its one shutdown.
//!
//! Every background loop (config reload, health checks, the scaling
//! controller, promotions, the usage meter, the access log's writer) is a
//! task on one runtime, started through [`Plane::spawn`] and handed a
//! [`ShutdownSignal`]. [`Plane::shutdown`] raises the signal once, waits
//! (up to a limit) for every loop to end the way it chose (the controller
//! stops its replicas, the usage meter writes its last interval, the access
//! log flushes), and drops what is left. Tests start and stop a plane
//! in-process the same way the gateway does.
//!
//! Work that must block (a file watcher's thread, a log writer) is not a
//! loop of its own: it is owned by a task here ([`Plane::hold`]) and ended
//! on a blocking thread when the signal comes.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves when the plane shuts down; every loop selects on it.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal that never comes, for a loop run on its own (a test's
    /// runtime) and ended by aborting its task.
    pub fn never() -> Self {
        Self(watch::channel(false).1)
    }

    /// Waits for the shutdown (at once if it was already raised).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|stopping| *stopping).await.is_err() {
            // No plane will ever raise it (`never`).
            std::future::pending::<()>().await;
        }
    }

    /// Whether the shutdown was raised.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// Which loops ended when the plane shut down, and which did not in time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Loops that ended within the limit.
    pub ended: Vec<&'static str>,
    /// Loops still running at the limit (dropped with the runtime).
    pub overdue: Vec<&'static str>,
}

/// The control plane's runtime and the loops running on it. Shared
/// (`Arc`) by whoever may stop it: the drain watcher and the main thread.
#[derive(Debug)]
pub struct Plane {
    runtime: Runtime,
    signal: watch::Sender<bool>,
    /// Taken by the first shutdown; a lock held for a push or that take.
    loops: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Plane {
    /// Starts the runtime: one worker thread (`control-plane`; the loops
    /// are light and mostly asleep) plus tokio's blocking pool for file
    /// I/O.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("control-plane")
            .enable_all()
            .build()?;
        let (signal, _) = watch::channel(false);
        Ok(Self {
            runtime,
            signal,
            loops: Mutex::new(Vec::new()),
        })
    }

    /// The runtime, for work that is not a loop (a promotion, a blocking
    /// call of the management API).
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// A signal for a loop started outside [`Plane::spawn`].
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.signal.subscribe())
    }

    /// Runs the loop `name`, which must end soon after its signal resolves.
    pub fn spawn<F>(&self, name: &'static str, body: impl FnOnce(ShutdownSignal) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.runtime.spawn(body(self.signal()));
        self.loops().push((name, task));
    }

    fn loops(&self) -> MutexGuard<'_, Vec<(&'static str, JoinHandle<()>)>> {
        self.loops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `owner` (whose drop ends a blocking thread: a watcher, a
    /// writer) until the shutdown, then drops it on a blocking thread and
    /// waits for that drop to return.
    pub fn hold<T: Send + 'static>(&self, name: &'static str, owner: T) {
        self.spawn(name, |mut signal| async move {
            signal.requested().await;
            let _ = tokio::task::spawn_blocking(move || drop(owner)).await;
        });
    }

    /// Raises the shutdown signal and waits up to `limit` for every loop
    /// to end (a loop still running then is aborted). Call it from outside
    /// the runtime. A second call finds nothing left to wait for.
    pub fn shutdown(&self, limit: Duration) -> ShutdownReport {
        self.signal.send_replace(true);
        let loops = std::mem::take(&mut *self.loops());
        let report = self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + limit;
            let mut report = ShutdownReport::default();
            for (name, mut task) in loops {
                match tokio::time::timeout_at(deadline, &mut task).await {
                    Ok(Ok(())) => report.ended.push(name),
                    Ok(Err(e)) => {
                        log::error!("control loop `{name}` failed: {e}");
                        report.ended.push(name);
                    }
                    Err(_) => {
                        task.abort();
                        report.overdue.push(name);
                    }
                }
            }
            report
        });
        if !report.overdue.is_empty() {
            log::warn!(
                "control loops still running after {limit:?}, stopped: {}",
                report.overdue.join(", ")
            );
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loop_sees_the_signal_and_ends() {
        let plane = Plane::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for name in ["a", "b"] {
            let tx = tx.clone();
            plane.spawn(name, |mut signal| async move {
                signal.requested().await;
                tx.send(name).unwrap();
            });
        }
        let report = plane.shutdown(Duration::from_secs(5));
        assert_eq!(report.ended, ["a", "b"]);
        assert!(report.overdue.is_empty());
        let mut seen: Vec<_> = rx.try_iter().collect();
        seen.sort_unstable();
        assert_eq!(seen, ["a", "b"]);
    }

    #[test]
    fn a_loop_that_ignores_the_signal_is_reported_and_stopped() {
        let plane = Plane::start().unwrap();
        plane.spawn(
            "polite",
            |mut signal| async move { signal.requested().await },
        );
        plane.spawn("deaf", |_| std::future::pending());
        let report = plane.shutdown(Duration::from_millis(50));
        assert_eq!(report.ended, ["polite"]);
        assert_eq!(report.overdue, ["deaf"]);
    }

    #[test]
    fn what_is_held_is_dropped_at_shutdown() {
        struct Owner(std::sync::mpsc::Sender<()>);
        impl Drop for Owner {
            fn drop(&mut self) {
                self.0.send(()).unwrap();
            }
        }
        let plane = Plane::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        plane.hold("owner", Owner(tx));
        assert!(rx.try_recv().is_err(), "held until the shutdown");
        let report = plane.shutdown(Duration::from_secs(5));
        assert_eq!(report.ended, ["owner"]);
        assert!(rx.try_recv().is_ok());
    }
}
