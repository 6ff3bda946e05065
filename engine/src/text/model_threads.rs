//! The threads a text model runs its batches on: a few long-lived threads
//! per backend, fed by a channel, instead of tokio's blocking pool.
//!
//! Why not `spawn_blocking`: the pool wakes whichever of its idle threads
//! it likes, so consecutive batches of one replica ran on about nine
//! different threads, each starting cold on whatever CPU it last ran on
//! (about one CPU migration per batch, measured with `perf sched`), and the
//! kernel could not learn where a replica's model work lives. One thread
//! that runs every batch keeps its caches warm and lets the scheduler
//! spread two replicas' model threads over two CPUs.
//!
//! The threads stop when the [`ModelThreads`] is dropped (the channel
//! closes), after the job they are running.

use std::panic::AssertUnwindSafe;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Runs blocking model work on dedicated threads.
#[derive(Debug)]
pub(super) struct ModelThreads {
    jobs: crossbeam_channel::Sender<Job>,
}

/// The model's threads are gone (one panicked in the job, or none could be
/// started).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the model thread failed")]
pub(super) struct ThreadFailed;

impl ModelThreads {
    /// Starts `count` (at least one) threads named `{name}-{i}`.
    pub(super) fn start(name: &str, count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in queue {
                        // A panicking job loses its own answer (its reply
                        // sender is dropped), not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on one of the threads and returns its result.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, ThreadFailed>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.send(job).map_err(|_| ThreadFailed)?;
        answer.await.map_err(|_| ThreadFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_every_job_on_the_same_thread() {
        let threads = ModelThreads::start("test-model", 1).unwrap();
        let mut seen = Vec::new();
        for i in 0..5 {
            let (n, name) = threads
                .run(move || (i * 2, std::thread::current().name().map(str::to_owned)))
                .await
                .unwrap();
            assert_eq!(n, i * 2);
            seen.push(name);
        }
        assert!(
            seen.iter().all(|n| n.as_deref() == Some("test-model-0")),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let threads = ModelThreads::start("test-model", 1).unwrap();
        let failed = threads.run(|| -> u32 { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(threads.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn jobs_run_in_parallel_on_several_threads() {
        // Two jobs that each wait for the other: they finish only if two
        // threads run them at once.
        let threads = ModelThreads::start("test-model", 2).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (a, b) = (barrier.clone(), barrier);
        let (x, y) = tokio::join!(
            threads.run(move || a.wait().is_leader()),
            threads.run(move || b.wait().is_leader())
        );
        assert_ne!(x.unwrap(), y.unwrap());
    }
}
