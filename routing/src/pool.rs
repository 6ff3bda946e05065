//! A deployment's runtime on the hot path: its current replicas, the
//! concurrency limit of each, and the activation queue where requests park
//! while no replica has a free slot.
//!
//! A request first tries to claim a slot directly ([`Pool::admit`]). When no
//! routable replica has one, or other requests are already waiting (first
//! come, first served), it parks in the pool's bounded FIFO. A parked
//! request is handed a [`Lease`] as soon as a slot frees up: when a lease is
//! dropped, when a replica joins the set, or when one becomes ready again.
//! Slots are handed out one by one, so a burst that parked while the
//! deployment was at zero is released only as far as each replica's
//! concurrency allows (never flushed onto the first replica that comes up).
//!
//! Lost wake-ups are ruled out by ordering: a parker publishes itself
//! (`parked += 1`) before it looks for a slot, and a releaser frees its slot
//! before it looks for parkers, both with `SeqCst`; one of the two always
//! sees the other.

// The queue's lock is held for one push, pop or scan, never across an
// await (`await_holding_lock` is denied): the std Mutex is the right tool.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use config::{Backpressure, OutlierDetection, QueueSettings, RetryPolicy};
use tokio::sync::{Notify, oneshot, watch};

use crate::replicas::{Health, Replica, ReplicaSet};
use crate::retry::RetryBudget;

/// The budget of bytes (head plus declared body) all parked requests of
/// one gateway may hold, across every pool.
#[derive(Debug)]
pub struct ParkedBytes {
    bytes: AtomicU64,
    max_bytes: AtomicU64,
}

impl ParkedBytes {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            bytes: AtomicU64::new(0),
            max_bytes: AtomicU64::new(max_bytes),
        }
    }

    /// Changes the budget (on a config reload). Requests parked already stay.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Bytes held by parked requests now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: u64) -> bool {
        let max = self.max_bytes.load(Ordering::Relaxed);
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The scaling controller's wake-up bell, shared by every pool of one
/// gateway: rung when some pool needs a replica started (a request parked
/// at a deployment without routable replicas, or a wake call) and when a
/// new snapshot is published. No ring is lost: one that comes while the
/// controller is busy is kept (a `Notify` permit) and ends its next wait
/// at once.
#[derive(Debug, Default)]
pub struct ScaleSignal {
    notify: Notify,
}

impl ScaleSignal {
    /// Wakes the scaling controller now, not at its next tick.
    pub fn notify_controller(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`notify_controller`](Self::notify_controller),
    /// or at once if one came since the last wait. Used by the scaling
    /// controller only.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Why a request that cannot be served now is not parked either. All 429s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    /// REJECT_ON_FULL and every routable replica is at its concurrency limit.
    #[error("every replica of this deployment is at its concurrency limit")]
    Busy,
    /// The deployment's queue holds `max_length` requests already.
    #[error("the deployment's request queue is full")]
    QueueFull,
    /// Parked requests hold the gateway's whole parked-bytes budget.
    #[error("too many queued request bytes in the gateway")]
    TooManyParkedBytes,
}

impl Overload {
    /// Every reason, in the order of their counters.
    pub const ALL: [Self; 3] = [Self::Busy, Self::QueueFull, Self::TooManyParkedBytes];

    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Busy => "reject_on_full",
            Self::QueueFull => "queue_full",
            Self::TooManyParkedBytes => "bytes_cap",
        }
    }
}

/// What happens to a request now.
#[derive(Debug)]
pub enum Admission {
    /// A replica slot, at once.
    Go(Lease),
    /// Parked: await [`Parked::lease`].
    Park(Parked),
    /// Refused (429).
    Refuse(Overload),
    /// The deployment cannot start replicas (503): why.
    Failed(Arc<String>),
}

/// How requests fared at the activation queue since the gateway started.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Requests that had to park.
    pub parked: AtomicU64,
    /// Parked requests that waited longer than the queue timeout (503).
    pub timed_out: AtomicU64,
    /// Parked requests whose client went away (499).
    pub client_closed: AtomicU64,
    /// Requests refused instead of parked (429), by [`Overload`] reason in
    /// the order of [`Overload::ALL`].
    pub refused: [AtomicU64; 3],
}

impl QueueCounters {
    /// Parked, timed out, client closed, and refused for any reason.
    pub fn get(&self) -> [u64; 4] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            load(&self.parked),
            load(&self.timed_out),
            load(&self.client_closed),
            self.refused.iter().map(load).sum(),
        ]
    }

    /// Refusals for one reason.
    pub fn refused(&self, why: Overload) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Lease>,
}

/// One deployment's replicas and activation queue. Shared (`Arc`) by every
/// snapshot that routes to the deployment, so counts, health and parked
/// requests survive config reloads.
pub struct Pool {
    replicas: ArcSwap<ReplicaSet>,
    limit: AtomicU32,
    queue: ArcSwap<QueueSettings>,
    waiters: Mutex<VecDeque<Waiter>>,
    parked: AtomicUsize,
    /// Requests served by replicas that have left the set.
    retired_served: AtomicU64,
    next_waiter: AtomicU64,
    /// Replicas a wake call or a promotion asked for (0: none).
    wake_requested: AtomicU32,
    status: ArcSwap<ScaleStatus>,
    counters: QueueCounters,
    parked_bytes: Arc<ParkedBytes>,
    scale_signal: Arc<ScaleSignal>,
    /// Set while the deployment cannot start replicas (the scaling
    /// controller gave up on it): why, in the replica's words.
    failure: ArcSwapOption<String>,
    /// Rung when the set of ready replicas may have changed (control plane
    /// only: joins, leaves, probes; never a request).
    readiness: watch::Sender<()>,
    /// When its traffic ejects a replica.
    outlier_detection: ArcSwap<OutlierDetection>,
    /// Ejections so far, by [`crate::outlier::Ejection`] (in its `ALL` order).
    ejections: [AtomicU64; 2],
    /// When a failed attempt is tried again.
    retry: ArcSwap<RetryPolicy>,
    retry_budget: RetryBudget,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("replicas", &self.replicas.load().len())
            .field("limit", &self.limit())
            .field("parked", &self.parked())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool whose replicas each run `limit` requests at once,
    /// parking requests within the gateway's `parked_bytes` budget and
    /// ringing `scale_signal` when it needs a replica.
    pub fn new(
        limit: u32,
        queue: QueueSettings,
        parked_bytes: Arc<ParkedBytes>,
        scale_signal: Arc<ScaleSignal>,
    ) -> Self {
        Self {
            replicas: ArcSwap::from_pointee(ReplicaSet::default()),
            limit: AtomicU32::new(limit.max(1)),
            queue: ArcSwap::from_pointee(queue),
            waiters: Mutex::new(VecDeque::new()),
            parked: AtomicUsize::new(0),
            retired_served: AtomicU64::new(0),
            next_waiter: AtomicU64::new(0),
            wake_requested: AtomicU32::new(0),
            status: ArcSwap::from_pointee(ScaleStatus::default()),
            counters: QueueCounters::default(),
            parked_bytes,
            scale_signal,
            failure: ArcSwapOption::empty(),
            readiness: watch::Sender::new(()),
            outlier_detection: ArcSwap::from_pointee(OutlierDetection::default()),
            ejections: Default::default(),
            retry: ArcSwap::from_pointee(RetryPolicy::default()),
            retry_budget: RetryBudget::default(),
        }
    }

    /// The deployment cannot start replicas: parked requests fail at once
    /// (their [`Parked::lease`] returns [`DeploymentWithdrawn`] and [`Parked::failure`]
    /// says why), and new ones that would park are refused
    /// ([`Admission::Failed`]) until [`Pool::recover`].
    pub fn fail(&self, reason: &str) {
        self.failure.store(Some(Arc::new(reason.to_owned())));
        self.close();
    }

    /// The deployment may start replicas again (its config changed).
    pub fn recover(&self) {
        self.failure.store(None);
    }

    /// Why the deployment cannot start replicas, while it cannot.
    pub fn failure(&self) -> Option<Arc<String>> {
        self.failure.load_full()
    }

    /// Applies changed settings (config reload). A higher limit frees slots
    /// at once.
    pub fn configure(
        self: &Arc<Self>,
        limit: u32,
        queue: QueueSettings,
        outlier_detection: OutlierDetection,
        retry: RetryPolicy,
    ) {
        self.limit.store(limit.max(1), Ordering::SeqCst);
        if **self.queue.load() != queue {
            self.queue.store(Arc::new(queue));
        }
        if **self.outlier_detection.load() != outlier_detection {
            self.outlier_detection.store(Arc::new(outlier_detection));
        }
        if **self.retry.load() != retry {
            self.retry.store(Arc::new(retry));
        }
        self.dispatch();
    }

    /// When a failed attempt is tried again.
    pub fn retry_policy(&self) -> RetryPolicy {
        **self.retry.load()
    }

    /// Its retry budget and counts.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.retry_budget
    }

    /// Requests one replica runs at once (its `predict_concurrency`).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// How long a request may stay parked.
    pub fn queue_timeout(&self) -> Duration {
        self.queue.load().timeout
    }

    /// The current replicas.
    pub fn replicas(&self) -> arc_swap::Guard<Arc<ReplicaSet>> {
        self.replicas.load()
    }

    /// Requests holding a slot on a current replica (computed, not
    /// counted, to keep a shared counter off the hot path).
    pub fn in_flight(&self) -> usize {
        let set = self.replicas.load();
        set.replicas()
            .iter()
            .map(|r| r.outstanding() as usize)
            .sum()
    }

    /// Requests routed to the deployment's replicas so far (retries not
    /// counted), including replicas that have left.
    pub fn served(&self) -> u64 {
        self.retired_served.load(Ordering::Relaxed) + self.replicas.load().served()
    }

    /// Requests waiting in the queue now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }

    /// Replaces the replica set (config reload of fixed replicas, or the
    /// scaling controller) and hands new capacity to parked requests.
    pub fn set_replicas(self: &Arc<Self>, set: ReplicaSet) {
        let old = self.replicas.swap(Arc::new(set));
        let current = self.replicas.load();
        let gone: u64 = old
            .replicas()
            .iter()
            .filter(|r| !current.replicas().iter().any(|c| Arc::ptr_eq(c, r)))
            .map(|r| r.served())
            .sum();
        self.retired_served.fetch_add(gone, Ordering::Relaxed);
        self.dispatch();
        self.readiness.send_replace(());
    }

    /// Adds a replica that passed its readiness probe.
    pub fn add_replica(self: &Arc<Self>, replica: Arc<Replica>) {
        self.replicas.rcu(|set| set.with(Arc::clone(&replica)));
        self.dispatch();
        self.readiness.send_replace(());
    }

    /// Takes a replica out of routing; requests already sent to it finish.
    pub fn remove_replica(&self, replica: &Arc<Replica>) {
        self.replicas.rcu(|set| set.without(replica));
        // It gets no new requests now, so its count is final.
        self.retired_served
            .fetch_add(replica.served(), Ordering::Relaxed);
        self.readiness.send_replace(());
    }

    /// A probe changed a replica's health to `health`: a replica found
    /// ready again may take parked requests, and whoever watches readiness
    /// hears of it.
    pub fn health_changed(self: &Arc<Self>, health: Health) {
        if health == Health::Ready && self.parked() > 0 {
            self.dispatch();
        }
        self.readiness.send_replace(());
    }

    /// A watch whose `changed()` resolves at the next change to which
    /// replicas are ready: one joins, leaves, or a probe changes its
    /// health. For the control plane (a promotion waiting for replicas).
    pub fn watch_readiness(&self) -> watch::Receiver<()> {
        self.readiness.subscribe()
    }

    /// Asks for at least `replicas` replicas without a request: a `/wake`
    /// call (one) or a promotion waiting for its target (its minimum).
    /// They scale down again by the usual rules once idle.
    pub fn wake(&self, replicas: u32) {
        self.wake_requested.fetch_max(replicas, Ordering::SeqCst);
        self.scale_signal.notify_controller();
    }

    /// Replicas a wake asked for since the last call (scaling controller).
    pub fn take_wake(&self) -> u32 {
        self.wake_requested.swap(0, Ordering::SeqCst)
    }

    /// How requests fared at the queue.
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    /// The scaling controller's last published counts.
    pub fn status(&self) -> ScaleStatus {
        ScaleStatus::clone(&self.status.load())
    }

    /// Publishes the scaling controller's counts.
    pub fn set_status(&self, status: ScaleStatus) {
        if **self.status.load() != status {
            self.status.store(Arc::new(status));
        }
    }

    /// Fails every parked request (the deployment was deactivated or
    /// deleted): their [`Parked::lease`] returns [`DeploymentWithdrawn`]. New requests
    /// never reach a closed pool: routing answers 404 first.
    pub fn close(&self) {
        let drained: Vec<Waiter> = {
            let mut waiters = self.lock_waiters();
            self.parked.fetch_sub(waiters.len(), Ordering::SeqCst);
            waiters.drain(..).collect()
        };
        // Dropping the senders outside the lock wakes the waiters.
        drop(drained);
    }

    /// Claims a slot at once, parks the request, or refuses it.
    /// `bytes` is what the request holds while parked (head + body).
    pub fn admit(self: &Arc<Self>, bytes: u64) -> Admission {
        self.admit_with_affinity(|| bytes, None)
    }

    /// [`admit`](Self::admit), preferring the replica a session key maps
    /// to (see [`ReplicaSet::claim_affine`]); any replica if it is full.
    /// `bytes` is asked only when the request must park, so the direct
    /// path does not size the request.
    pub fn admit_with_affinity(
        self: &Arc<Self>,
        bytes: impl FnOnce() -> u64,
        session: Option<u64>,
    ) -> Admission {
        // Nobody may overtake parked requests: first come, first served.
        if self.parked() == 0 {
            let set = self.replicas.load();
            let claimed = session
                .and_then(|key| set.claim_affine(self.limit(), key))
                .or_else(|| set.claim(self.limit()));
            if let Some(replica) = claimed {
                replica.count_served();
                return Admission::Go(self.lease(Arc::clone(replica)));
            }
        }
        // Checked only here, where a request would wait: a failed
        // deployment has no replica to claim, so the fast path never sees it.
        if let Some(why) = self.failure() {
            return Admission::Failed(why);
        }
        let queue = **self.queue.load();
        let outcome = if queue.backpressure == Backpressure::RejectOnFull
            && self.replicas.load().routable_count() > 0
        {
            Err(Overload::Busy)
        } else {
            self.park(bytes(), queue.max_length)
        };
        match outcome {
            Ok(parked) => {
                self.counters.parked.fetch_add(1, Ordering::Relaxed);
                Admission::Park(parked)
            }
            Err(overload) => {
                self.counters.refused[overload as usize].fetch_add(1, Ordering::Relaxed);
                Admission::Refuse(overload)
            }
        }
    }

    fn park(self: &Arc<Self>, bytes: u64, max_length: u32) -> Result<Parked, Overload> {
        if !self.parked_bytes.reserve(bytes) {
            return Err(Overload::TooManyParkedBytes);
        }
        // From here on `Parked`'s drop gives the bytes back.
        let (tx, rx) = oneshot::channel();
        let mut parked = Parked {
            pool: Arc::clone(self),
            id: self.next_waiter.fetch_add(1, Ordering::Relaxed),
            rx,
            bytes,
            queued: false,
        };
        {
            let mut waiters = self.lock_waiters();
            if waiters.len() >= max_length as usize {
                return Err(Overload::QueueFull);
            }
            waiters.push_back(Waiter { id: parked.id, tx });
            self.parked.fetch_add(1, Ordering::SeqCst);
        }
        parked.queued = true;
        if self.replicas.load().routable_count() == 0 {
            // Scale from zero (or replace dead replicas) now, not at the
            // controller's next tick.
            self.scale_signal.notify_controller();
        }
        // A slot may have been freed between the failed claim and the push.
        self.dispatch();
        Ok(parked)
    }

    /// A slot on some routable replica, counted as served.
    fn claim(self: &Arc<Self>) -> Option<Lease> {
        let set = self.replicas.load();
        let replica = set.claim(self.limit())?;
        replica.count_served();
        Some(self.lease(Arc::clone(replica)))
    }

    fn lease(self: &Arc<Self>, replica: Arc<Replica>) -> Lease {
        Lease {
            pool: Arc::clone(self),
            replica,
        }
    }

    /// Hands free slots to parked requests, oldest first.
    fn dispatch(self: &Arc<Self>) {
        let mut spare: Option<Lease> = None;
        {
            let mut waiters = self.lock_waiters();
            while let Some(front) = waiters.front() {
                if front.tx.is_closed() {
                    // Timed out or disconnected; its drop is under way.
                    waiters.pop_front();
                    self.parked.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let Some(lease) = spare.take().or_else(|| self.claim()) else {
                    break;
                };
                let waiter = waiters.pop_front().expect("front exists");
                self.parked.fetch_sub(1, Ordering::SeqCst);
                // A waiter that left after the check above gives it back.
                spare = waiter.tx.send(lease).err();
            }
        }
        // Only when the queue emptied; dropped outside the lock, since a
        // lease's drop may dispatch again.
        drop(spare);
    }

    fn lock_waiters(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding this lock leaves the queue consistent
        // (every step is a single push or pop), so poisoning is ignored.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, id: u64) {
        let mut waiters = self.lock_waiters();
        if let Some(at) = waiters.iter().position(|w| w.id == id) {
            waiters.remove(at);
            self.parked.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The deployment was deactivated or deleted while the request was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the deployment stopped serving while the request was queued")]
pub struct DeploymentWithdrawn;

/// A request waiting in a pool's queue. Dropping it (timeout, client gone)
/// takes it out of the queue and gives its bytes back.
#[derive(Debug)]
pub struct Parked {
    pool: Arc<Pool>,
    id: u64,
    rx: oneshot::Receiver<Lease>,
    bytes: u64,
    queued: bool,
}

impl Parked {
    /// Waits for a replica slot. Cancel-safe: dropping the future (or the
    /// `Parked`) while waiting loses no slot. Once it has returned, do not
    /// call it again.
    pub async fn lease(&mut self) -> Result<Lease, DeploymentWithdrawn> {
        let lease = (&mut self.rx).await.map_err(|_| DeploymentWithdrawn)?;
        self.queued = false;
        Ok(lease)
    }

    /// How long it may wait, per the deployment's queue settings.
    pub fn timeout(&self) -> Duration {
        self.pool.queue_timeout()
    }

    /// Why its deployment cannot start replicas, when that is why the wait
    /// ended in [`DeploymentWithdrawn`].
    pub fn failure(&self) -> Option<Arc<String>> {
        self.pool.failure()
    }

    /// The deployment's queue counters, to record how the wait ended.
    pub fn counters(&self) -> &QueueCounters {
        &self.pool.counters
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.pool.parked_bytes.give_back(self.bytes);
        if self.queued {
            self.pool.forget(self.id);
        }
        // A lease sent meanwhile sits in `rx` and is released with it.
    }
}

mod failures;
mod lease;
mod status;

pub use failures::Retry;
pub use lease::Lease;
pub use status::{PendingReason, ReplicaCounts, ScaleStatus, Shortfall};

#[cfg(test)]
mod tests;
