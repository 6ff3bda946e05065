use super::*;

const NO_LIMIT: u32 = u32::MAX;

fn set(n: u16) -> ReplicaSet {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    ReplicaSet::new(&addrs)
}

fn index(set: &ReplicaSet, r: &Arc<Replica>) -> usize {
    set.replicas()
        .iter()
        .position(|x| Arc::ptr_eq(x, r))
        .unwrap()
}

/// Marks replica `i` unready (it has never been ready, so one failure).
fn fail(set: &ReplicaSet, i: usize) {
    set.replicas()[i].record_probe(false, 2);
    assert_eq!(set.replicas()[i].health(), Health::Unready);
}

fn outstanding(set: &ReplicaSet) -> Vec<u32> {
    set.replicas().iter().map(|r| r.outstanding()).collect()
}

#[test]
fn empty_set_has_nothing_to_claim() {
    assert!(set(0).claim(NO_LIMIT).is_none());
}

#[test]
fn claims_count_until_released() {
    let set = set(1);
    let r = Arc::clone(set.claim(NO_LIMIT).unwrap());
    set.claim(NO_LIMIT).unwrap();
    assert_eq!(r.outstanding(), 2);
    r.release();
    assert_eq!(r.outstanding(), 1);
}

#[test]
fn two_choices_never_pick_the_busier_of_two() {
    let set = set(2);
    let busy = index(&set, set.claim(NO_LIMIT).unwrap());
    for _ in 0..100 {
        let r = set.claim(NO_LIMIT).unwrap();
        assert_ne!(
            index(&set, r),
            busy,
            "picked the replica with more in flight"
        );
        r.release();
    }
}

#[test]
fn load_spreads_evenly_over_many_replicas() {
    let set = set(8);
    (0..800).for_each(|_| {
        set.claim(NO_LIMIT).unwrap();
    });
    let counts = outstanding(&set);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    // With two choices the spread stays within a few requests: over
    // 20,000 runs the gap was at most 8. Random choice would leave gaps
    // of 25 and more.
    assert!(max - min <= 8, "uneven spread: {counts:?}");
}

#[test]
fn the_limit_is_never_exceeded_and_every_slot_is_used() {
    let set = set(3);
    let claimed = (0..100).filter(|_| set.claim(2).is_some()).count();
    assert_eq!(claimed, 6, "3 replicas x 2 slots");
    assert_eq!(outstanding(&set), [2, 2, 2]);
    set.replicas()[1].release();
    let r = set.claim(2).expect("the freed slot");
    assert_eq!(index(&set, r), 1);
    assert!(set.claim(2).is_none());
}

#[test]
fn concurrent_claims_respect_the_limit() {
    let set = Arc::new(set(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let set = Arc::clone(&set);
            std::thread::spawn(move || (0..1000).filter(|_| set.claim(3).is_some()).count())
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 12);
    assert_eq!(outstanding(&set), [3, 3, 3, 3]);
}

#[test]
fn new_replicas_are_routable_but_not_ready() {
    let set = set(3);
    assert!(set.replicas().iter().all(|r| r.health() == Health::Unknown));
    assert_eq!(set.routable_count(), 3);
    assert_eq!(set.ready_count(), 0);
    assert_eq!(set.probed_count(), 0);
    let ready = Replica::ready("127.0.0.1:1".parse().unwrap());
    assert_eq!(ready.health(), Health::Ready);
}

#[test]
fn probes_drive_health_with_hysteresis_only_once_ready() {
    let set = set(1);
    let r = &set.replicas()[0];
    // Never ready: the first failure is enough.
    assert_eq!(r.record_probe(false, 2), Some(Health::Unready));
    assert_eq!(r.record_probe(false, 2), None);
    // One success makes it ready.
    assert_eq!(r.record_probe(true, 2), Some(Health::Ready));
    // Once ready, it takes `threshold` consecutive failures.
    assert_eq!(r.record_probe(false, 2), None);
    assert_eq!(r.health(), Health::Ready);
    assert_eq!(r.record_probe(true, 2), None, "a success resets the count");
    assert_eq!(r.record_probe(false, 2), None);
    assert_eq!(r.record_probe(false, 2), Some(Health::Unready));
    assert_eq!(r.record_probe(true, 2), Some(Health::Ready));
    // A threshold of one reacts at once.
    assert_eq!(r.record_probe(false, 1), Some(Health::Unready));
}

#[test]
fn an_unreachable_replica_leaves_routing_until_a_probe_passes() {
    let set = set(2);
    set.replicas()[0].record_probe(true, 2);
    set.replicas()[0].mark_unreachable();
    for _ in 0..50 {
        let r = set.claim(NO_LIMIT).unwrap();
        assert_eq!(index(&set, r), 1);
    }
    set.replicas()[0].record_probe(true, 2);
    assert_eq!(set.routable_count(), 2);
}

#[test]
fn counts_follow_health() {
    let set = set(3);
    set.replicas()[0].record_probe(true, 2);
    set.replicas()[1].record_probe(true, 2);
    fail(&set, 2);
    assert_eq!(set.ready_count(), 2);
    assert_eq!(set.routable_count(), 2);
    assert_eq!(set.probed_count(), 3);
}

#[test]
fn claims_skip_unready_replicas() {
    let set = set(3);
    fail(&set, 0);
    fail(&set, 2);
    for _ in 0..100 {
        assert_eq!(index(&set, set.claim(NO_LIMIT).unwrap()), 1);
    }
    fail(&set, 1);
    assert!(set.claim(NO_LIMIT).is_none(), "all unready");
}

#[test]
fn load_spreads_evenly_over_the_routable_replicas() {
    let set = set(8);
    for i in [1, 2, 5, 6] {
        fail(&set, i);
    }
    (0..400).for_each(|_| {
        set.claim(NO_LIMIT).unwrap();
    });
    let counts = outstanding(&set);
    for i in [1, 2, 5, 6] {
        assert_eq!(counts[i], 0, "unready replica picked: {counts:?}");
    }
    let routable: Vec<u32> = [0, 3, 4, 7].iter().map(|&i| counts[i]).collect();
    let (min, max) = (
        routable.iter().min().unwrap(),
        routable.iter().max().unwrap(),
    );
    assert!(max - min <= 8, "uneven spread: {counts:?}");
}

#[test]
fn retries_claim_another_routable_replica() {
    let set = set(3);
    fail(&set, 1);
    let first = Arc::clone(&set.replicas()[0]);
    for _ in 0..20 {
        let other = set.claim_other(NO_LIMIT, &first).unwrap();
        assert_eq!(index(&set, other), 2);
    }
    fail(&set, 2);
    assert!(set.claim_other(NO_LIMIT, &first).is_none());
}

#[test]
fn sets_change_by_sharing_replicas() {
    let set = set(2);
    let kept = Arc::clone(&set.replicas()[1]);
    kept.try_claim(NO_LIMIT);
    let smaller = set.without(&set.replicas()[0]);
    assert_eq!(smaller.len(), 1);
    assert_eq!(smaller.replicas()[0].outstanding(), 1, "state carried over");
    let bigger = smaller.with(Arc::new(Replica::ready("127.0.0.1:1".parse().unwrap())));
    assert_eq!(bigger.len(), 2);
    assert_eq!(bigger.ready_count(), 1);
}

#[test]
fn sessions_map_to_one_replica_and_few_move_when_one_joins() {
    let four = set(4);
    let five = four.with(Arc::new(Replica::new("127.0.0.1:9100".parse().unwrap())));
    let home = |set: &ReplicaSet, key: u64| {
        let r = set.claim_affine(u32::MAX, key).unwrap();
        r.release();
        r.addr()
    };
    let mut moved = 0;
    for key in 0..1000u64 {
        let key = mix(key);
        assert_eq!(home(&four, key), home(&four, key), "stable");
        if home(&four, key) != home(&five, key) {
            moved += 1;
            assert_eq!(home(&five, key).port(), 9100, "only to the new replica");
        }
    }
    // About a fifth move, to the new replica; none between old ones.
    assert!((120..280).contains(&moved), "{moved}");
    let full = set(1);
    assert!(full.claim_affine(1, 7).is_some());
    assert!(full.claim_affine(1, 7).is_none(), "its replica is full");
}

#[tokio::test]
async fn drained_resolves_at_the_last_release_and_at_once_when_idle() {
    let idle = Replica::new("127.0.0.1:9000".parse().unwrap());
    idle.drained().await;

    let busy = Arc::new(Replica::new("127.0.0.1:9001".parse().unwrap()));
    assert!(busy.try_claim(2));
    assert!(busy.try_claim(2));
    let waiter = tokio::spawn({
        let busy = Arc::clone(&busy);
        async move { busy.drained().await }
    });
    // The waiter has set the flag and listens before it sleeps; the first
    // release leaves one request in flight, so it must keep waiting.
    while !busy.retiring.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    busy.release();
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    busy.release();
    waiter.await.unwrap();
    assert_eq!(busy.outstanding(), 0);
}
