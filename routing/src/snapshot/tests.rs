use super::*;
use crate::pool::{Admission, Lease, Parked, Pool};
use crate::publish::Routing;

const TEXT: &str = r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = { source = "static", addresses = ["127.0.0.1:9001"] }
[[models.deployments]]
id = "b"
active = false
replicas = { source = "static", addresses = ["127.0.0.1:9002"] }
[[models.deployments]]
id = "dev"
kind = "development"
replicas = { source = "static", addresses = ["127.0.0.1:9003"] }
[[models.environments]]
name = "staging"
deployment = "b"
[[models.environments]]
name = "empty"
"#;

fn snapshot() -> Snapshot {
    Snapshot::new(&load(TEXT))
}

#[test]
fn targets_resolve_or_say_why_not() {
    let s = snapshot();
    let m = s.model("m").unwrap();
    assert_eq!(s.model("x").unwrap_err(), RouteError::UnknownModel);
    assert_eq!(m.resolve(Target::Deployment("a")).unwrap().id(), "a");
    assert_eq!(m.resolve(Target::Development).unwrap().id(), "dev");
    assert_eq!(
        m.resolve(Target::Deployment("b")).unwrap_err(),
        RouteError::Inactive
    );
    assert_eq!(
        m.resolve(Target::Environment("staging")).unwrap_err(),
        RouteError::Inactive
    );
    assert_eq!(
        m.resolve(Target::Environment("empty")).unwrap_err(),
        RouteError::EmptyEnvironment
    );
    assert_eq!(
        m.resolve(Target::Production).unwrap_err(),
        RouteError::EmptyEnvironment
    );
    assert_eq!(
        m.resolve(Target::Environment("nope")).unwrap_err(),
        RouteError::UnknownEnvironment
    );
    assert_eq!(
        m.resolve(Target::Deployment("zz")).unwrap_err(),
        RouteError::UnknownDeployment
    );
}

fn load(text: &str) -> Config {
    config::load_str(text, "t").unwrap()
}

fn route(s: &Snapshot, target: Target<'_>) -> Arc<DeploymentRoute> {
    Arc::clone(s.model("m").unwrap().resolve(target).unwrap())
}

/// Fills the only slot of `route`'s pool, then parks one request there.
fn fill_and_park(route: &DeploymentRoute) -> (Lease, Parked) {
    let Admission::Go(lease) = route.pool().admit(0) else {
        panic!("a free slot");
    };
    let Admission::Park(parked) = route.pool().admit(0) else {
        panic!("parks behind the full slot");
    };
    (lease, parked)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn pools_survive_a_rebuild_and_keep_unchanged_replicas() {
    let routing = Routing::new(snapshot());
    let first = routing.load_full();
    let a = route(&first, Target::Deployment("a"));
    let Admission::Go(lease) = a.pool().admit(0) else {
        panic!("a has a replica with a free slot");
    };
    let a_replica = Arc::clone(&a.pool().replicas().replicas()[0]);
    let changed = TEXT.replace("127.0.0.1:9003", "127.0.0.1:9004");
    routing.publish(Snapshot::rebuild(&load(&changed), &first));
    let second = routing.load_full();
    let a2 = route(&second, Target::Deployment("a"));
    assert!(Arc::ptr_eq(a.pool(), a2.pool()), "same pool");
    assert!(
        Arc::ptr_eq(&a_replica, &a2.pool().replicas().replicas()[0]),
        "same replica"
    );
    assert_eq!(a2.pool().in_flight(), 1, "in-flight count carried over");
    drop(lease);
    assert_eq!(a2.pool().in_flight(), 0);
    let dev = route(&second, Target::Development);
    assert_eq!(dev.pool().replicas().replicas()[0].addr().port(), 9004);
}

#[test]
fn rebuilding_changes_no_live_pool_until_published() {
    let routing = Routing::new(snapshot());
    let first = routing.load_full();
    let a = route(&first, Target::Deployment("a"));
    let dev = route(&first, Target::Development);
    let (_lease, mut parked) = fill_and_park(&dev);
    let changed = TEXT
        .replace("127.0.0.1:9001", "127.0.0.1:9005")
        .replace("kind = \"development\"", "active = false");
    let changed = format!("[server]\nmax_parked_bytes = 100\n{changed}");

    let update = Snapshot::rebuild(&load(&changed), &first);
    // Nothing the current snapshot routes to has changed.
    assert_eq!(a.pool().replicas().replicas()[0].addr().port(), 9001);
    assert_eq!(dev.pool().parked(), 1, "still parked");
    assert!(Arc::ptr_eq(&routing.load_full(), &first));
    // The update says what publishing it will change.
    let effects = update.effects();
    let closes: Vec<&Arc<Pool>> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Close(pool) => Some(pool),
            _ => None,
        })
        .collect();
    // b was inactive already, dev is now.
    assert_eq!(closes.len(), 2);
    assert!(closes.iter().any(|p| Arc::ptr_eq(p, dev.pool())));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::SetReplicas { pool, set } if Arc::ptr_eq(pool, a.pool())
            && set.replicas()[0].addr().port() == 9005
    )));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::SetMaxParkedBytes { max_bytes: 100, .. }))
    );
    let configured = effects
        .iter()
        .filter(|e| matches!(e, Effect::Configure { .. }))
        .count();
    assert_eq!(configured, 3, "every kept pool");

    routing.publish(update);
    assert_eq!(a.pool().replicas().replicas()[0].addr().port(), 9005);
    assert_eq!(dev.pool().parked(), 0);
    assert!(block_on(parked.lease()).is_err(), "failed by the close");
    // The new budget holds: 101 bytes may not park.
    let a_new = route(&routing.load(), Target::Deployment("a"));
    let (_lease, _parked) = fill_and_park(&a_new);
    assert!(matches!(
        a_new.pool().admit(101),
        Admission::Refuse(crate::pool::Overload::TooManyParkedBytes)
    ));
}

#[test]
fn rebuilding_the_same_config_only_reapplies_settings() {
    let first = snapshot();
    let update = Snapshot::rebuild(&load(TEXT), &first);
    // Only the settings of the kept pools, re-applied as on every reload,
    // and the close of the inactive one.
    assert!(
        update
            .effects()
            .iter()
            .all(|e| matches!(e, Effect::Configure { .. } | Effect::Close(_)))
    );
    let fresh = route(update.snapshot(), Target::Deployment("a"));
    assert!(Arc::ptr_eq(
        fresh.pool(),
        route(&first, Target::Deployment("a")).pool()
    ));
}

#[test]
fn a_request_failed_by_a_close_finds_the_new_snapshot_published() {
    let routing = Arc::new(Routing::new(snapshot()));
    let first = routing.load_full();
    let dev = route(&first, Target::Development);
    let (_lease, mut parked) = fill_and_park(&dev);
    let waiter = {
        let routing = Arc::clone(&routing);
        std::thread::spawn(move || {
            assert!(block_on(parked.lease()).is_err());
            // What a client retrying at once would be routed by.
            routing
                .load()
                .model("m")
                .unwrap()
                .resolve(Target::Development)
                .map(|r| r.id().to_owned())
        })
    };
    let without_dev = TEXT.replace("kind = \"development\"", "active = false");
    routing.publish(Snapshot::rebuild(&load(&without_dev), &first));
    assert_eq!(
        waiter.join().unwrap(),
        Err(RouteError::NoDevelopment),
        "closed only after the store"
    );
}

#[test]
fn deleted_deployments_fail_their_parked_requests() {
    let routing = Routing::new(snapshot());
    let first = routing.load_full();
    let a = route(&first, Target::Deployment("a"));
    let (_lease, mut parked) = fill_and_park(&a);
    let without_a = TEXT.replace(
        "[[models.deployments]]\nid = \"a\"\nreplicas = { source = \"static\", addresses = [\"127.0.0.1:9001\"] }\n",
        "",
    );
    assert_ne!(without_a, TEXT);
    let update = Snapshot::rebuild(&load(&without_a), &first);
    assert_eq!(a.pool().parked(), 1, "not before it is published");
    routing.publish(update);
    assert!(block_on(parked.lease()).is_err());
}
