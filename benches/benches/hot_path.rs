//! Criterion benchmarks of the per-request work the gateway does before it
//! talks to a replica, one group per step of the request's path:
//!
//! - `resolve`: URL parsing + snapshot lookup (must be flat in the number
//!   of models); `resolve_request`: the same with and without a rollout;
//!   `config_source`: the same lookup on a config from a file and on a
//!   fleet node's (its file joined to the shared document from etcd);
//! - `auth`: the API key check;
//! - `canary_pick`: the rollout split decision alone (stage from the
//!   clock, the smooth split, a sticky session's side);
//! - `replica_pick`: admission, a slot claimed on a replica (direct, with
//!   session affinity, and the parked hand-off).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use routing::{Routing, Snapshot};

fn routing(models: usize) -> Routing {
    let text = format!(
        "[[api_keys]]\nname = \"k\"\nsha256 = \"{}\"\nscope = \"all\"\n{}",
        hex_digest("igw_bench_key"),
        config::test_util::many_models_toml(models, "127.0.0.1:9000")
    );
    let config = config::load_str(&text, "bench.toml").expect("valid bench config");
    Routing::new(Snapshot::new(&config))
}

fn hex_digest(key: &str) -> String {
    config::key_digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A staging predict URL on `host` parsed and resolved to its deployment.
fn lookup(routing: &Routing, host: &str) -> usize {
    let route = gateway::route::parse(Some(host), black_box("/environments/staging/predict"))
        .expect("route");
    let snapshot = routing.load();
    let deployment = snapshot
        .model(route.model_id)
        .and_then(|m| m.resolve(route.target))
        .expect("resolves");
    deployment.id().len()
}

fn route_resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for models in [10, 10_000] {
        let routing = routing(models);
        // The last model added, so no benefit from insertion order.
        let host = format!("model-m{}.example.com", models - 1);
        group.bench_function(format!("{models}_models"), |b| {
            b.iter(|| black_box(lookup(&routing, black_box(&host))));
        });
    }
    group.finish();
}

/// The lookup on a single gateway's config against a fleet node's: the
/// same models, once as one file, once as a node file joined to the
/// fleet's shared document (as the etcd source builds it).
fn config_source(c: &mut Criterion) {
    let models = config::test_util::many_models_toml(1000, "127.0.0.1:9000");
    let keys = format!(
        "[[api_keys]]\nname = \"k\"\nsha256 = \"{}\"\nscope = \"all\"\n",
        hex_digest("igw_bench_key")
    );
    let file = config::load_str(&format!("{keys}{models}"), "gateway.toml").expect("valid");
    let node = config::load_str(
        "[node]\nname = \"n1\"\n[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        "node.toml",
    )
    .expect("valid node file");
    let shared = config::load_shared_str(&format!("{keys}{models}"), "etcd:/ig/config")
        .expect("valid shared document");
    let fleet = config::Config::joined(&node, shared);
    let mut group = c.benchmark_group("config_source");
    for (source, config) in [("file", &file), ("etcd", &fleet)] {
        let routing = Routing::new(Snapshot::new(config));
        group.bench_function(source, |b| {
            b.iter(|| black_box(lookup(&routing, black_box("model-m999.example.com"))));
        });
    }
    group.finish();
}

/// An environment in a rollout (stage from the wall clock, then the smooth
/// split) against one without.
fn rollout_split(c: &mut Criterion) {
    let started = routing::rollout::now_ms() - 300_000;
    let text = format!(
        r#"
[[models]]
id = "m"
[[models.deployments]]
id = "a"
replicas = {{ source = "static", addresses = ["127.0.0.1:9001"] }}
[[models.deployments]]
id = "b"
replicas = {{ source = "static", addresses = ["127.0.0.1:9002"] }}
[[models.environments]]
name = "production"
deployment = "a"
[models.environments.rollout]
deployment = "b"
started_at_ms = {started}
duration_secs = 1000
[[models.environments]]
name = "plain"
deployment = "a"
"#
    );
    let config = config::load_str(&text, "bench.toml").expect("valid bench config");
    let routing = Routing::new(Snapshot::new(&config));
    let mut group = c.benchmark_group("resolve_request");
    for (name, target) in [
        ("no_rollout", routing::Target::Environment("plain")),
        ("rollout_split", routing::Target::Production),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let snapshot = routing.load();
                let resolved = snapshot
                    .model("m")
                    .and_then(|m| {
                        m.resolve_request(
                            black_box(target),
                            routing::SidePreference::Split,
                            routing::rollout::now_ms,
                        )
                    })
                    .expect("resolves");
                black_box(resolved.route.id().len())
            });
        });
    }
    group.finish();
}

fn auth_check(c: &mut Criterion) {
    let routing = routing(10);
    let mut group = c.benchmark_group("auth");
    // A known key, and an unknown one of the same length: both pay for
    // SHA-256 of the key; the unknown one's digest finds no bucket, so it
    // skips the constant-time compare.
    for (name, header, ok) in [
        ("api_key", &b"Api-Key igw_bench_key"[..], true),
        ("unknown_key", &b"Api-Key igw_bench_kez"[..], false),
    ] {
        let check = || routing.load().keys().authenticate(Some(header)).is_ok();
        assert_eq!(check(), ok, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let snapshot = routing.load();
                black_box(
                    snapshot
                        .keys()
                        .authenticate(Some(black_box(header)))
                        .is_ok(),
                )
            });
        });
    }
    group.finish();
}

/// The gateway's hash of an `x-session-id` (gateway/src/proxy.rs: std's
/// `DefaultHasher`, fixed keys).
fn session_hash(id: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    hasher.write(id);
    hasher.finish()
}

/// The rollout split decision alone, without the snapshot lookup around it
/// (`resolve_request/rollout_split` has both).
fn canary_pick(c: &mut Criterion) {
    use routing::rollout::{Phase, SmoothSplit, now_ms, sticky_side};
    let mut group = c.benchmark_group("canary_pick");
    let split = SmoothSplit::default();
    group.bench_function("smooth_split", |b| {
        b.iter(|| black_box(split.next(black_box(30))));
    });
    let started = now_ms() - 300_000;
    group.bench_function("stage_from_clock_and_split", |b| {
        b.iter(|| {
            let phase = Phase::at(now_ms() - black_box(started), black_box(1_000_000));
            black_box(split.next(phase.percent()))
        });
    });
    group.bench_function("sticky_session", |b| {
        b.iter(|| {
            let hash = session_hash(black_box(b"session-0123456789abcdef"));
            black_box(sticky_side(hash, black_box(30)))
        });
    });
    group.finish();
}

fn pool(replicas: u16, limit: u32) -> std::sync::Arc<routing::Pool> {
    let pool = std::sync::Arc::new(routing::Pool::new(
        limit,
        config::QueueSettings::default(),
        std::sync::Arc::new(routing::ParkedBytes::new(u64::MAX)),
        std::sync::Arc::default(),
    ));
    for i in 0..replicas {
        pool.add_replica(std::sync::Arc::new(routing::Replica::ready(
            ([127, 0, 0, 1], 9000 + i).into(),
        )));
    }
    pool
}

/// The direct path (a slot is free; the less busy of two random replicas,
/// or a session's own replica) against the parked path (park, hand the
/// slot over when a lease ends, receive it).
fn replica_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("replica_pick");
    let direct = pool(8, u32::MAX);
    group.bench_function("admit_8_replicas", |b| {
        b.iter(|| match direct.admit(black_box(300)) {
            routing::Admission::Go(lease) => black_box(lease.replica().addr()),
            _ => unreachable!("a slot is always free"),
        });
    });
    let session = session_hash(b"session-0123456789abcdef");
    group.bench_function("admit_session_8_replicas", |b| {
        b.iter(
            || match direct.admit_with_affinity(|| 300, Some(black_box(session))) {
                routing::Admission::Go(lease) => black_box(lease.replica().addr()),
                _ => unreachable!("a slot is always free"),
            },
        );
    });

    let parked = pool(1, 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let routing::Admission::Go(first) = parked.admit(0) else {
        unreachable!("the only slot is free")
    };
    let mut held = Some(first);
    group.bench_function("parked_handoff", |b| {
        b.iter(|| {
            let routing::Admission::Park(mut waiting) = parked.admit(black_box(300)) else {
                unreachable!("the only slot is taken")
            };
            drop(held.take()); // hands the slot to `waiting`
            let lease = runtime.block_on(waiting.lease()).expect("handed over");
            black_box(lease.replica().addr());
            held = Some(lease);
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    route_resolution,
    config_source,
    rollout_split,
    auth_check,
    canary_pick,
    replica_pick
);
criterion_main!(benches);
