use super::*;

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
    Snapshot::build(&config::load_str(TEXT, "t").unwrap(), None)
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

#[test]
fn pools_survive_a_rebuild_and_keep_unchanged_replicas() {
    let first = snapshot();
    let route = |s: &Snapshot, target| Arc::clone(s.model("m").unwrap().resolve(target).unwrap());
    let a = route(&first, Target::Deployment("a"));
    let crate::pool::Admission::Go(lease) = a.pool().admit(0) else {
        panic!("a has a replica with a free slot");
    };
    let changed = TEXT.replace("127.0.0.1:9003", "127.0.0.1:9004");
    let second = Snapshot::build(&config::load_str(&changed, "t").unwrap(), Some(&first));
    let a2 = route(&second, Target::Deployment("a"));
    assert!(Arc::ptr_eq(a.pool(), a2.pool()), "same pool");
    assert_eq!(a2.pool().in_flight(), 1, "in-flight count carried over");
    drop(lease);
    assert_eq!(a2.pool().in_flight(), 0);
    let dev = route(&second, Target::Development);
    assert_eq!(dev.pool().replicas().replicas()[0].addr().port(), 9004);
}

#[test]
fn deleted_and_deactivated_deployments_fail_their_parked_requests() {
    let first = snapshot();
    let dev = Arc::clone(
        first
            .model("m")
            .unwrap()
            .resolve(Target::Development)
            .unwrap(),
    );
    // Fill the only slot, then park one more.
    let crate::pool::Admission::Go(_lease) = dev.pool().admit(0) else {
        panic!()
    };
    let crate::pool::Admission::Park(mut parked) = dev.pool().admit(0) else {
        panic!()
    };
    let without_dev = TEXT.replace("kind = \"development\"", "active = false");
    let _second = Snapshot::build(&config::load_str(&without_dev, "t").unwrap(), Some(&first));
    let outcome = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(parked.lease());
    assert!(outcome.is_err());
}
