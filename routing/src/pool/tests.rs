use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::retry::RetryReason;

fn queue(max_length: u32, backpressure: Backpressure) -> QueueSettings {
    QueueSettings {
        max_length,
        timeout: Duration::from_secs(5),
        backpressure,
    }
}

fn pool_with(limit: u32, queue: QueueSettings, parked_bytes: Arc<ParkedBytes>) -> Arc<Pool> {
    Arc::new(Pool::new(limit, queue, parked_bytes, Arc::default()))
}

fn pool(limit: u32) -> Arc<Pool> {
    pool_with(
        limit,
        queue(100, Backpressure::QueueOnFull),
        Arc::new(ParkedBytes::new(1 << 20)),
    )
}

fn replica(port: u16) -> Arc<Replica> {
    Arc::new(Replica::ready(SocketAddr::from(([127, 0, 0, 1], port))))
}

fn go(a: Admission) -> Lease {
    match a {
        Admission::Go(lease) => lease,
        other => panic!("expected a slot, got {other:?}"),
    }
}

fn park(a: Admission) -> Parked {
    match a {
        Admission::Park(parked) => parked,
        other => panic!("expected to park, got {other:?}"),
    }
}

fn elsewhere(r: Retry) -> Lease {
    match r {
        Retry::Elsewhere(lease) => lease,
        other => panic!("expected another replica, got {other:?}"),
    }
}

fn refused(a: Admission) -> Overload {
    match a {
        Admission::Refuse(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The lease a parked request holds now, if it has been handed one.
fn try_lease(parked: &mut Parked) -> Option<Lease> {
    parked.rx.try_recv().ok().inspect(|_| parked.queued = false)
}

#[test]
fn slots_up_to_the_limit_then_parking_in_order() {
    let pool = pool(2);
    pool.add_replica(replica(1));
    let a = go(pool.admit(10));
    let _b = go(pool.admit(10));
    let mut first = park(pool.admit(10));
    let mut second = park(pool.admit(10));
    assert_eq!((pool.in_flight(), pool.parked()), (2, 2));
    drop(a);
    let handed = try_lease(&mut first);
    assert!(handed.is_some(), "the oldest parked request goes first");
    assert!(try_lease(&mut second).is_none());
    assert_eq!((pool.in_flight(), pool.parked()), (2, 1));
}

#[test]
fn newcomers_do_not_overtake_parked_requests() {
    let pool = pool(1);
    let mut parked = park(pool.admit(0));
    // A replica appears: the parked request gets it, a newcomer parks.
    pool.add_replica(replica(1));
    let lease = try_lease(&mut parked).expect("dispatched when the replica joined");
    let mut next = park(pool.admit(0));
    drop(lease);
    assert!(try_lease(&mut next).is_some());
}

#[test]
fn a_burst_is_released_only_as_far_as_the_limit_allows() {
    let pool = pool(3);
    let mut burst: Vec<Parked> = (0..20).map(|_| park(pool.admit(0))).collect();
    pool.add_replica(replica(1));
    let mut leases: Vec<Lease> = burst.iter_mut().filter_map(try_lease).collect();
    assert_eq!(leases.len(), 3, "one replica, three slots");
    assert_eq!(pool.replicas().replicas()[0].outstanding(), 3);
    leases.pop();
    let more: Vec<Lease> = burst.iter_mut().filter_map(try_lease).collect();
    assert_eq!(more.len(), 1, "one slot freed, one request released");
    assert_eq!(pool.replicas().replicas()[0].outstanding(), 3);
}

#[test]
fn the_queue_is_bounded() {
    let pool = pool_with(
        1,
        queue(2, Backpressure::QueueOnFull),
        Arc::new(ParkedBytes::new(1 << 20)),
    );
    let _a = park(pool.admit(0));
    let _b = park(pool.admit(0));
    assert_eq!(refused(pool.admit(0)), Overload::QueueFull);
    assert_eq!(pool.parked(), 2);

    let never = pool_with(
        1,
        queue(0, Backpressure::QueueOnFull),
        Arc::new(ParkedBytes::new(1 << 20)),
    );
    assert_eq!(refused(never.admit(0)), Overload::QueueFull);
}

#[test]
fn reject_on_full_refuses_when_replicas_are_busy_but_parks_at_zero() {
    let pool = pool_with(
        1,
        queue(10, Backpressure::RejectOnFull),
        Arc::new(ParkedBytes::new(1 << 20)),
    );
    let mut parked = park(pool.admit(0));
    pool.add_replica(replica(1));
    let _lease = try_lease(&mut parked).unwrap();
    assert_eq!(refused(pool.admit(0)), Overload::Busy);
}

#[test]
fn parked_bytes_are_capped_across_pools_and_given_back() {
    let parked_bytes = Arc::new(ParkedBytes::new(100));
    let a = pool_with(
        1,
        queue(10, Backpressure::QueueOnFull),
        Arc::clone(&parked_bytes),
    );
    let b = pool_with(
        1,
        queue(10, Backpressure::QueueOnFull),
        Arc::clone(&parked_bytes),
    );
    let first = park(a.admit(60));
    assert_eq!(refused(b.admit(60)), Overload::TooManyParkedBytes);
    assert_eq!(parked_bytes.bytes(), 60, "a refusal holds nothing");
    let second = park(b.admit(40));
    assert_eq!(parked_bytes.bytes(), 100);
    drop((first, second));
    assert_eq!(parked_bytes.bytes(), 0);
    assert_eq!((a.parked(), b.parked()), (0, 0));
}

#[test]
fn a_request_that_leaves_the_queue_gives_its_place_away() {
    let pool = pool(1);
    pool.add_replica(replica(1));
    let lease = go(pool.admit(0));
    let gone = park(pool.admit(0));
    let mut next = park(pool.admit(0));
    drop(gone);
    assert_eq!(pool.parked(), 1);
    drop(lease);
    assert!(try_lease(&mut next).is_some());
    assert_eq!(pool.parked(), 0);
}

#[test]
fn a_slot_sent_to_a_request_that_left_is_not_lost() {
    let pool = pool(1);
    pool.add_replica(replica(1));
    let lease = go(pool.admit(0));
    let leaving = park(pool.admit(0));
    drop(lease); // handed to `leaving`, which has not collected it
    assert_eq!(pool.in_flight(), 1);
    drop(leaving);
    assert_eq!(pool.in_flight(), 0, "the uncollected lease was released");
    go(pool.admit(0));
}

#[test]
fn closing_fails_parked_requests() {
    let pool = pool(1);
    let mut parked = park(pool.admit(0));
    pool.close();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(parked.lease());
    assert_eq!(outcome.unwrap_err(), DeploymentWithdrawn);
    assert_eq!(pool.parked(), 0);
}

#[test]
fn retries_take_the_failed_replica_out_of_routing() {
    let pool = pool(4);
    pool.add_replica(replica(1));
    pool.add_replica(replica(2));
    let lease = go(pool.admit(0));
    let failed = lease.replica().addr();
    let retry = elsewhere(lease.retry_elsewhere(RetryReason::Connect, 1));
    assert_ne!(retry.replica().addr(), failed);
    drop(lease);
    for _ in 0..20 {
        assert_ne!(go(pool.admit(0)).replica().addr(), failed);
    }
    assert!(
        matches!(retry.retry_elsewhere(RetryReason::Connect, 2), Retry::Wait),
        "no third replica: the request waits for a slot"
    );
}

#[test]
fn a_request_whose_connection_failed_waits_for_a_slot_when_every_other_replica_is_busy() {
    let pool = pool(1);
    pool.add_replica(replica(1));
    pool.add_replica(replica(2));
    let busy = go(pool.admit(0));
    let lease = go(pool.admit(0));
    let failed = lease.replica().addr();
    assert!(matches!(
        lease.retry_elsewhere(RetryReason::Connect, 1),
        Retry::Wait
    ));
    let mut parked = park(lease.requeue(0).expect("the budget has a retry"));
    assert_eq!((pool.parked(), pool.in_flight()), (1, 1));
    let survivor = busy.replica().addr();
    drop(busy);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lease = runtime.block_on(parked.lease()).unwrap();
    assert_eq!(lease.replica().addr(), survivor);
    assert_ne!(survivor, failed);
    assert_eq!(pool.retry_budget().retries(RetryReason::Connect), 1);
}

#[test]
fn with_no_other_replica_free_a_failed_attempt_stops_and_a_busy_one_tries_again() {
    let pool = pool(1);
    pool.add_replica(replica(1));
    pool.add_replica(replica(2));
    let _busy = go(pool.admit(0));
    let lease = go(pool.admit(0));
    assert!(matches!(
        lease.retry_elsewhere(RetryReason::Failure, 1),
        Retry::Spent
    ));
    assert!(matches!(
        lease.retry_elsewhere(RetryReason::Busy, 1),
        Retry::Again
    ));
    assert_eq!(pool.retry_budget().retries(RetryReason::Busy), 0);
}

#[test]
fn a_busy_replica_stays_in_routing_and_moves_stop_at_the_attempts_allowed() {
    let pool = pool(4);
    for i in 1..=3 {
        pool.add_replica(replica(i));
    }
    let lease = go(pool.admit(0));
    let busy = lease.replica().addr();
    let retry = elsewhere(lease.retry_elsewhere(RetryReason::Busy, 1));
    assert_ne!(retry.replica().addr(), busy);
    assert!(
        pool.replicas().replicas().iter().all(|r| r.is_routable()),
        "busy is not broken"
    );
    assert!(
        matches!(retry.retry_elsewhere(RetryReason::Busy, 3), Retry::Again),
        "three attempts made: no fourth elsewhere, but busy waits for its replica"
    );
    assert!(
        matches!(retry.retry_elsewhere(RetryReason::Failure, 3), Retry::Spent),
        "three attempts made: no fourth"
    );
    assert_eq!(pool.retry_budget().retries(RetryReason::Busy), 1);
}

#[test]
fn many_threads_never_exceed_the_limit_and_all_finish() {
    let pool = pool_with(
        2,
        queue(10_000, Backpressure::QueueOnFull),
        Arc::new(ParkedBytes::new(u64::MAX)),
    );
    pool.add_replica(replica(1));
    pool.add_replica(replica(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let pool = Arc::clone(&pool);
            let peak = Arc::clone(&peak);
            runtime.spawn(async move {
                let lease = match pool.admit(1) {
                    Admission::Go(lease) => lease,
                    Admission::Park(mut parked) => parked.lease().await.unwrap(),
                    Admission::Refuse(why) => panic!("{why}"),
                    Admission::Failed(why) => panic!("{why}"),
                };
                peak.fetch_max(lease.replica().outstanding() as usize, Ordering::SeqCst);
                tokio::task::yield_now().await;
            })
        })
        .collect();
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert!(peak.load(Ordering::SeqCst) <= 2);
    assert_eq!((pool.in_flight(), pool.parked()), (0, 0));
    let served: u64 = pool.replicas().served();
    assert_eq!(served, 2000);
}
