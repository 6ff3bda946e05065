//! What counting one request costs on the hot path: `RouteMetrics::record`
//! (a status counter, two byte counters, four histograms and two
//! last-minute windows) with the gateway's Prometheus recorder installed,
//! against the last-minute window alone.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use routing::telemetry::{Finished, RecentStats, RouteMetrics};
use tokio::time::Instant;

fn finished() -> Finished {
    Finished {
        at: Instant::now(),
        status: 200,
        request_bytes: 23,
        response_bytes: 120,
        total: Duration::from_micros(900),
        queue_wait: None,
        upstream: Some(Duration::from_micros(700)),
        first_byte: Some(Duration::from_micros(650)),
    }
}

fn record(c: &mut Criterion) {
    let handle = gateway::telemetry::install().expect("the recorder installs once");
    // The gateway folds samples into buckets every second; so does this.
    std::thread::spawn(move || {
        loop {
            std::thread::park_timeout(Duration::from_millis(200));
            handle.run_upkeep();
        }
    });
    let deployment = Arc::new(RecentStats::default());
    let environment = Arc::new(RecentStats::default());
    let route = RouteMetrics::new(
        "m",
        "production",
        "d",
        Some(Arc::clone(&deployment)),
        Some(environment),
    );
    let f = finished();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_request", |b| b.iter(|| route.record(&f)));
    group.bench_function("recent_window_only", |b| {
        b.iter(|| deployment.record(f.at, f.status, f.total));
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
