//! Criterion benchmarks of the per-request work the gateway does before it
//! talks to a replica: URL parsing + snapshot lookup (must be flat in the
//! number of models), API key check, replica pick.

use std::hint::black_box;

use control::{Routing, Snapshot};
use criterion::{Criterion, criterion_group, criterion_main};

fn routing(models: usize) -> Routing {
    let text = format!(
        "[[api_keys]]\nname = \"k\"\nsha256 = \"{}\"\nscope = \"all\"\n{}",
        hex_digest("igw_bench_key"),
        config::test_util::many_models_toml(models, "127.0.0.1:9000")
    );
    let config = config::load_str(&text, "bench.toml").expect("valid bench config");
    Routing::new(Snapshot::build(&config, None))
}

fn hex_digest(key: &str) -> String {
    config::key_digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn route_resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for models in [10, 10_000] {
        let routing = routing(models);
        // The last model added, so no benefit from insertion order.
        let host = format!("model-m{}.example.com", models - 1);
        group.bench_function(format!("{models}_models"), |b| {
            b.iter(|| {
                let route = gateway::route::parse(
                    Some(black_box(&host)),
                    black_box("/environments/staging/predict"),
                )
                .expect("route");
                let snapshot = routing.load();
                let deployment = snapshot
                    .model(route.model_id)
                    .and_then(|m| m.resolve(route.target))
                    .expect("resolves");
                black_box(deployment.id().len())
            });
        });
    }
    group.finish();
}

fn auth_check(c: &mut Criterion) {
    let routing = routing(10);
    let header = b"Api-Key igw_bench_key";
    c.bench_function("auth/api_key", |b| {
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

fn replica_pick(c: &mut Criterion) {
    let addrs: Vec<std::net::SocketAddr> =
        (0..8).map(|i| ([127, 0, 0, 1], 9000 + i).into()).collect();
    let set = std::sync::Arc::new(control::ReplicaSet::new(&addrs));
    c.bench_function("pick/p2c_8_replicas", |b| {
        b.iter(|| {
            let lease = set.pick().expect("a replica");
            black_box(lease.replica().addr())
        });
    });
}

criterion_group!(benches, route_resolution, auth_check, replica_pick);
criterion_main!(benches);
