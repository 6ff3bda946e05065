//! The controller on a paused clock. Replica processes run on real time, so
//! a stand-in provisioner (instances that are ready at once) takes their
//! place here; `gateway/tests/scaling.rs` runs the real ones.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use super::*;
use routing::pool::{Admission, Parked, Shortfall};
use routing::snapshot::Snapshot;

#[derive(Debug)]
struct ReadyAtOnce {
    events: Arc<Notify>,
    started: Mutex<Vec<Arc<Instance>>>,
    port: AtomicU16,
}

impl Provisioner for ReadyAtOnce {
    fn start(&self, spec: &ReplicaSpec) -> Result<Arc<Instance>, crate::provision::ProvisionError> {
        let instance = Arc::new(Instance::new(&spec.deployment, Arc::clone(&self.events)));
        let port = 20_000 + self.port.fetch_add(1, Ordering::Relaxed);
        instance.set_state(InstanceState::Running(SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))));
        self.started.lock().unwrap().push(Arc::clone(&instance));
        Ok(instance)
    }

    fn stop(&self, instance: &Instance) {
        instance.set_state(InstanceState::Stopped);
    }
}

const CONFIG: &str = r#"
[node]
cpus = 3
memory = "64Gi"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
autoscaling = { min_replica = 0, max_replica = 4, autoscaling_window = 10, scale_down_delay = 30 }
[models.deployments.engine]
backend = "synthetic"
"#;

struct Setup {
    controller: Controller,
    pool: Arc<Pool>,
    provisioner: Arc<ReadyAtOnce>,
}

fn setup() -> Setup {
    setup_with(CONFIG)
}

fn setup_with(text: &str) -> Setup {
    let config = config::load_str(text, "t").unwrap();
    let routing = Arc::new(Routing::new(Snapshot::new(&config)));
    let pool = Arc::clone(routing.load().deployment("m", "d").unwrap().pool());
    let events = Arc::new(Notify::new());
    let provisioner = Arc::new(ReadyAtOnce {
        events: Arc::clone(&events),
        started: Mutex::new(Vec::new()),
        port: AtomicU16::new(0),
    });
    let controller = Controller::new(
        routing,
        Arc::clone(&provisioner) as Arc<dyn Provisioner>,
        events,
        NodeCapacity::from_config(&config.node),
        ScalingSettings::default(),
    );
    Setup {
        controller,
        pool,
        provisioner,
    }
}

fn park(pool: &Arc<Pool>) -> Parked {
    match pool.admit(0) {
        Admission::Park(parked) => parked,
        other => panic!("expected to park: {other:?}"),
    }
}

/// One second passes, then a tick.
async fn tick(c: &mut Controller) {
    tokio::time::advance(Duration::from_secs(1)).await;
    c.reconcile(true);
    // Let drain tasks run and state changes land.
    tokio::task::yield_now().await;
    c.reconcile(false);
}

#[tokio::test(start_paused = true)]
async fn parked_requests_wake_a_replica_at_once_then_load_ramps_up_within_capacity() {
    let Setup {
        mut controller,
        pool,
        provisioner,
    } = setup();
    controller.reconcile(true);
    assert_eq!(pool.status().desired, 0, "no traffic, min 0");

    // The first parked request starts a replica without waiting for a tick.
    let mut first = park(&pool);
    controller.reconcile(false);
    assert_eq!(provisioner.started.lock().unwrap().len(), 1);
    controller.reconcile(false); // it is ready: into routing, the request gets it
    let lease = first.lease().await.unwrap();
    assert_eq!(pool.replicas().len(), 1);

    // Six requests of load (one in flight, five parked): ceil(6 / 0.7) = 9
    // wanted, clamped to max 4, and the node has room for 3 (1 cpu each).
    let mut waiting: Vec<Parked> = (0..5).map(|_| park(&pool)).collect();
    for _ in 0..3 {
        tick(&mut controller).await;
    }
    let status = pool.status();
    assert_eq!(status.desired, 4, "{status:?}");
    assert_eq!(provisioner.started.lock().unwrap().len(), 3);
    assert_eq!(
        (status.pending, pool.replicas().len()),
        (1, 3),
        "{status:?}"
    );
    assert!(
        matches!(
            status.pending_reason,
            Some(PendingReason::NoRoom(Shortfall::Cpu { free: 0, .. }))
        ),
        "{status:?}"
    );
    // The new replicas took parked requests, one slot each.
    let mut leases = vec![lease];
    for parked in &mut waiting {
        if let Ok(Ok(lease)) = tokio::time::timeout(Duration::ZERO, parked.lease()).await {
            leases.push(lease);
        }
    }
    assert_eq!(leases.len(), 3, "three replicas, one slot each");
    assert_eq!(pool.parked(), 3);
}

#[tokio::test(start_paused = true)]
async fn scale_down_waits_its_delay_steps_by_the_rate_and_reaches_zero() {
    let Setup {
        mut controller,
        pool,
        ..
    } = setup();
    // Load of 3 for ten seconds: 3 replicas (the node's limit).
    let mut load: Vec<Parked> = (0..3).map(|_| park(&pool)).collect();
    controller.reconcile(false);
    let mut leases = Vec::new();
    for _ in 0..10 {
        tick(&mut controller).await;
        let mut still = Vec::new();
        for mut parked in load.drain(..) {
            match tokio::time::timeout(Duration::ZERO, parked.lease()).await {
                Ok(lease) => leases.push(lease.unwrap()),
                Err(_) => still.push(parked),
            }
        }
        load = still;
    }
    assert_eq!(pool.replicas().len(), 3);
    load.clear();
    leases.clear();

    // Idle from now on: record the replica count each second.
    let mut counts = Vec::new();
    for _ in 0..150 {
        tick(&mut controller).await;
        counts.push(pool.replicas().len());
    }
    let changes: Vec<(usize, usize)> = counts
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] != w[1])
        .map(|(i, w)| (i + 1, w[1]))
        .collect();
    // 3 -> 1 (50% of 3, rounded up, per step) -> 0, each after a full delay.
    assert_eq!(
        changes.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
        [1, 0],
        "{counts:?}"
    );
    assert!(
        changes[0].0 >= 30,
        "first step after the delay: {changes:?}"
    );
    assert!(
        changes[1].0 - changes[0].0 >= 30,
        "a full delay between steps: {changes:?}"
    );
    assert_eq!(pool.status().desired, 0);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_stays_unready_is_replaced() {
    let Setup {
        mut controller,
        pool,
        provisioner,
    } = setup_with(&CONFIG.replace("min_replica = 0", "min_replica = 1"));
    controller.reconcile(false);
    controller.reconcile(false);
    assert_eq!(pool.replicas().len(), 1);
    let first = Arc::clone(&pool.replicas().replicas()[0]);
    // Its probes fail from now on (the health checker would do this).
    first.mark_unreachable();
    for _ in 0..29 {
        tick(&mut controller).await;
        assert!(
            Arc::ptr_eq(&pool.replicas().replicas()[0], &first),
            "kept while < 30 s"
        );
    }
    for _ in 0..3 {
        tick(&mut controller).await;
    }
    let started = provisioner.started.lock().unwrap();
    assert_eq!(started.len(), 2, "a replacement started");
    assert_eq!(started[0].state(), InstanceState::Stopped);
    assert_eq!(pool.replicas().len(), 1);
    assert!(!Arc::ptr_eq(&pool.replicas().replicas()[0], &first));
    assert_eq!(pool.status().crashes, 1);
}
