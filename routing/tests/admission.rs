//! Request admission as the gateway meets it, without sockets or a
//! runtime's clock: a pool's `admit` gives a slot (Go), parks the request
//! (Park) or refuses it (Refuse), and a parked request gets its slot when
//! one frees or a replica becomes ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::{Backpressure, QueueSettings};
use routing::{
    Admission, Health, Lease, Overload, Parked, ParkedBytes, Pool, Replica, ReplicaSet, ScaleSignal,
};

/// Bounds an await that the test expects to finish at once, so that a bug
/// fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(5);

fn pool(limit: u32, max_length: u32, backpressure: Backpressure, budget: u64) -> Arc<Pool> {
    let queue = QueueSettings {
        max_length,
        timeout: Duration::from_secs(60),
        backpressure,
    };
    Arc::new(Pool::new(
        limit,
        queue,
        Arc::new(ParkedBytes::new(budget)),
        Arc::new(ScaleSignal::default()),
    ))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn go(admission: Admission) -> Lease {
    match admission {
        Admission::Go(lease) => lease,
        other => panic!("expected a slot, got {other:?}"),
    }
}

fn park(admission: Admission) -> Parked {
    match admission {
        Admission::Park(parked) => parked,
        other => panic!("expected to park, got {other:?}"),
    }
}

fn refused(admission: Admission) -> Overload {
    match admission {
        Admission::Refuse(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn lease_of(parked: &mut Parked) -> Lease {
    tokio::time::timeout(LIMIT, parked.lease())
        .await
        .expect("the parked request got no slot")
        .expect("the deployment is still there")
}

#[tokio::test]
async fn a_free_slot_goes_then_requests_park_then_the_full_queue_refuses() {
    let pool = pool(1, 1, Backpressure::QueueOnFull, 1 << 20);
    pool.add_replica(Arc::new(Replica::ready(addr(1))));

    let first = go(pool.admit(100));
    assert_eq!(first.replica().addr(), addr(1));
    let mut second = park(pool.admit(100));
    assert_eq!(pool.parked(), 1);
    assert_eq!(refused(pool.admit(100)), Overload::QueueFull);
    assert_eq!(pool.counters().refused(Overload::QueueFull), 1);

    // The first request ends: its slot goes to the parked one.
    drop(first);
    let lease = lease_of(&mut second).await;
    assert_eq!(lease.replica().addr(), addr(1));
    assert_eq!(pool.parked(), 0);
}

#[tokio::test]
async fn reject_on_full_refuses_while_replicas_are_busy() {
    let pool = pool(1, 10, Backpressure::RejectOnFull, 1 << 20);
    pool.add_replica(Arc::new(Replica::ready(addr(1))));
    let _busy = go(pool.admit(10));
    assert_eq!(refused(pool.admit(10)), Overload::Busy);
}

#[tokio::test]
async fn a_request_over_the_parked_bytes_budget_is_refused() {
    let pool = pool(1, 10, Backpressure::QueueOnFull, 1_000);
    let _parked = park(pool.admit(600));
    assert_eq!(refused(pool.admit(600)), Overload::TooManyParkedBytes);
}

#[tokio::test]
async fn a_parked_request_is_woken_when_a_replica_becomes_ready() {
    let pool = pool(1, 10, Backpressure::QueueOnFull, 1 << 20);
    // At zero replicas the request parks.
    let mut parked = park(pool.admit(10));

    // A replica that failed its first probe joins: not routable, so the
    // request stays parked.
    let replica = Arc::new(Replica::new(addr(7)));
    assert_eq!(replica.record_probe(false, 1), Some(Health::Unready));
    pool.set_replicas(ReplicaSet::default().with(Arc::clone(&replica)));
    assert_eq!(pool.parked(), 1, "nothing to claim on an unready replica");

    // Its next probe passes: the health checker tells the pool, which
    // hands the slot to the parked request and tells readiness watchers.
    let mut readiness = pool.watch_readiness();
    readiness.mark_unchanged();
    let health = replica.record_probe(true, 1).expect("a change to ready");
    assert_eq!(health, Health::Ready);
    pool.health_changed(health);
    let lease = lease_of(&mut parked).await;
    assert_eq!(lease.replica().addr(), addr(7));
    assert!(
        readiness.has_changed().unwrap(),
        "readiness watchers hear of it"
    );
}
