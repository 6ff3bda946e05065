//! Admission control for one replica, as a limiter: at most `predict_concurrency`
//! predictions run at once, at most `queue_size` more wait (first come,
//! first served), and anything beyond that is refused at once (503 with
//! `Retry-After`: busy) instead of piling up. A waiter that goes away
//! (client disconnect) leaves the queue when its future is dropped.
//!
//! The limit holds whoever sends: one gateway, several, or clients
//! calling the replica directly. [`Limiter::has_room`] lets a request
//! be refused before its body is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one replica.
#[derive(Debug)]
pub struct Limiter {
    running: Arc<Semaphore>,
    concurrency: usize,
    waiting: AtomicUsize,
    queue_size: usize,
    /// The most predictions that ever ran at once.
    peak: AtomicUsize,
}

/// Every running slot and every waiting place is taken: the caller should
/// answer busy (503 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replica is at capacity: {running} running and {waiting} waiting")]
pub struct Full {
    /// Predictions running.
    pub running: usize,
    /// Predictions waiting.
    pub waiting: usize,
}

/// A running slot; freed when dropped (after the response, or its stream,
/// has been produced).
pub type Slot = OwnedSemaphorePermit;

impl Limiter {
    /// `concurrency` running slots (at least 1) and `queue_size` waiting places.
    pub fn new(concurrency: usize, queue_size: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            running: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            waiting: AtomicUsize::new(0),
            queue_size,
            peak: AtomicUsize::new(0),
        }
    }

    /// Takes a running slot, waiting in line for one if needed, or refuses
    /// at once when the line is full.
    pub async fn enter(&self) -> Result<Slot, Full> {
        if let Ok(slot) = Arc::clone(&self.running).try_acquire_owned() {
            return Ok(self.entered(slot));
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = WaitingGuard(&self.waiting);
        if before >= self.queue_size {
            return Err(Full {
                running: self.running(),
                waiting: before,
            });
        }
        let slot = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Ok(self.entered(slot))
    }

    fn entered(&self, slot: Slot) -> Slot {
        self.peak.fetch_max(self.running(), Ordering::AcqRel);
        slot
    }

    /// Refuses a request arriving now when no running slot and no waiting
    /// place is free. A hint (another request may take or free one next):
    /// [`Self::enter`] decides.
    pub fn has_room(&self) -> Result<(), Full> {
        let waiting = self.waiting();
        if self.running.available_permits() == 0 && waiting >= self.queue_size {
            return Err(Full {
                running: self.running(),
                waiting,
            });
        }
        Ok(())
    }

    /// The most predictions that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Predictions running right now.
    pub fn running(&self) -> usize {
        self.concurrency - self.running.available_permits()
    }

    /// Predictions waiting right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_up_to_the_limit_queues_up_to_the_bound_and_refuses_beyond() {
        let limiter = Arc::new(Limiter::new(1, 2));
        let first = limiter.enter().await.unwrap();
        assert_eq!(limiter.running(), 1);

        let queued: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::clone(&limiter);
                tokio::spawn(async move { a.enter().await.map(drop) })
            })
            .collect();
        while limiter.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            limiter.enter().await.unwrap_err(),
            Full {
                running: 1,
                waiting: 2
            }
        );

        drop(first);
        for q in queued {
            q.await.unwrap().unwrap();
        }
        assert_eq!((limiter.running(), limiter.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn has_room_until_slots_and_queue_are_taken_and_the_peak_is_kept() {
        let limiter = Arc::new(Limiter::new(1, 1));
        assert!(limiter.has_room().is_ok());
        let first = limiter.enter().await.unwrap();
        assert!(limiter.has_room().is_ok(), "a waiting place is free");
        let waiter = {
            let l = Arc::clone(&limiter);
            tokio::spawn(async move { l.enter().await.map(drop) })
        };
        while limiter.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            limiter.has_room(),
            Err(Full {
                running: 1,
                waiting: 1
            })
        );
        drop(first);
        waiter.await.unwrap().unwrap();
        assert!(limiter.has_room().is_ok());
        assert_eq!(limiter.peak(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let limiter = Limiter::new(1, 1);
        let _slot = limiter.enter().await.unwrap();
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(10), limiter.enter()).await;
        assert!(gave_up.is_err());
        assert_eq!(limiter.waiting(), 0);
    }
}
