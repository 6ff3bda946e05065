//! Health checks against real (tiny) HTTP replicas on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use control::{HealthChecker, HealthSettings};
use routing::{Health, ReplicaSet, Routing, Snapshot, Target};
use testkit::fixture::{Deployment, Model};
use testkit::wait::eventually_async_within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A stand-in replica: answers `GET /health/ready` with whatever status the
/// test sets, anything else with 404, then closes the connection.
struct FakeReplica {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
}

impl FakeReplica {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let shared = Arc::clone(&status);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let status = Arc::clone(&shared);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let code = if head.starts_with(b"GET /health/ready HTTP/1.1\r\n") {
                        status.load(Ordering::Relaxed)
                    } else {
                        404
                    };
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { addr, status }
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

/// One model whose deployment "a" has these replicas.
fn config(addrs: &[SocketAddr], extra: &str) -> config::Config {
    let text = format!(
        "{}{extra}\n",
        Model::new("m")
            .deployment(Deployment::fixed("a", addrs))
            .toml()
    );
    config::load_str(&text, "test").unwrap()
}

fn routing(addrs: &[SocketAddr]) -> Arc<Routing> {
    Arc::new(Routing::new(Snapshot::new(&config(addrs, ""))))
}

fn replicas(routing: &Routing, deployment: &str) -> Arc<ReplicaSet> {
    Arc::clone(
        &routing
            .load()
            .model("m")
            .unwrap()
            .resolve(Target::Deployment(deployment))
            .unwrap()
            .pool()
            .replicas(),
    )
}

fn fast() -> HealthSettings {
    HealthSettings {
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        failure_threshold: 2,
        recovery_interval: Duration::from_millis(20),
    }
}

/// Polls `done` until it holds; the deadline is far beyond what a loaded
/// machine needs, and only bounds a test that would otherwise hang.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    eventually_async_within(what, Duration::from_secs(30), || std::future::ready(done())).await;
}

#[tokio::test]
async fn a_replica_goes_ready_unready_and_ready_again() {
    let replica = FakeReplica::start(200).await;
    let routing = routing(&[replica.addr]);
    let set = replicas(&routing, "a");
    assert_eq!(set.replicas()[0].health(), Health::Unknown);
    assert!(
        set.claim(u32::MAX).is_some(),
        "routable before the first probe"
    );
    let checker = HealthChecker::spawn(Arc::clone(&routing), fast());

    wait_for("ready", || set.replicas()[0].health() == Health::Ready).await;
    assert_eq!(set.ready_count(), 1);

    replica.set_status(503);
    wait_for("unready", || set.replicas()[0].health() == Health::Unready).await;
    assert_eq!(set.ready_count(), 0);
    assert!(
        set.claim(u32::MAX).is_none(),
        "nothing routable: the gateway answers 503"
    );

    replica.set_status(200);
    wait_for("ready again", || {
        set.replicas()[0].health() == Health::Ready
    })
    .await;
    assert!(set.claim(u32::MAX).is_some());
    checker.abort();
}

#[tokio::test]
async fn pick_avoids_the_unready_replica() {
    let good = FakeReplica::start(200).await;
    let loading = FakeReplica::start(503).await;
    let routing = routing(&[loading.addr, good.addr]);
    let set = replicas(&routing, "a");
    // The gateway's way: a loop on the control plane's runtime.
    let plane = Arc::new(control::plane::Plane::start().unwrap());
    let checker = HealthChecker::new(Arc::clone(&routing), fast());
    plane.spawn("health checks", |shutdown| checker.run(shutdown));

    wait_for("both probed", || {
        set.replicas()[0].health() == Health::Unready && set.replicas()[1].health() == Health::Ready
    })
    .await;
    assert_eq!(set.ready_count(), 1);
    assert_eq!(set.routable_count(), 1);
    for _ in 0..200 {
        assert_eq!(set.claim(u32::MAX).unwrap().addr(), good.addr);
    }
    // Stopping blocks on the plane's runtime: not from this one's worker.
    let report = tokio::task::spawn_blocking(move || plane.shutdown(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.ended, ["health checks"]);
}

/// Rounds driven by hand, so the failure threshold is checked exactly.
#[tokio::test]
async fn a_ready_replica_survives_one_failed_probe() {
    let replica = FakeReplica::start(200).await;
    let routing = routing(&[replica.addr]);
    let set = replicas(&routing, "a");
    let checker = HealthChecker::new(Arc::clone(&routing), fast());

    checker.check_once().await;
    assert_eq!(set.replicas()[0].health(), Health::Ready);
    replica.set_status(503);
    checker.check_once().await;
    assert_eq!(set.replicas()[0].health(), Health::Ready, "one failure");
    checker.check_once().await;
    assert_eq!(set.replicas()[0].health(), Health::Unready, "two failures");
    replica.set_status(200);
    checker.check_once().await;
    assert_eq!(set.replicas()[0].health(), Health::Ready, "one success");
}

#[tokio::test]
async fn a_replica_never_ready_is_unready_at_the_first_failure() {
    let replica = FakeReplica::start(503).await;
    let routing = routing(&[replica.addr]);
    HealthChecker::new(Arc::clone(&routing), fast())
        .check_once()
        .await;
    assert_eq!(
        replicas(&routing, "a").replicas()[0].health(),
        Health::Unready
    );
}

#[tokio::test]
async fn health_survives_a_reload_and_new_deployments_are_checked() {
    let replica = FakeReplica::start(200).await;
    let other = FakeReplica::start(200).await;
    let routing = routing(&[replica.addr]);
    let checker = HealthChecker::new(Arc::clone(&routing), fast());
    checker.check_once().await;

    // Inactive deployments are checked too: one may be promoted next.
    let added = format!(
        "[[models.deployments]]\nid = \"b\"\nactive = false\n\
         replicas = {{ source = \"static\", addresses = [\"{}\"] }}",
        other.addr
    );
    let next = Snapshot::rebuild(&config(&[replica.addr], &added), &routing.load());
    routing.publish(next);
    let a = replicas(&routing, "a");
    assert_eq!(a.replicas()[0].health(), Health::Ready, "carried over");

    checker.check_once().await;
    let b = routing
        .load()
        .deployments()
        .find(|d| d.id() == "b")
        .map(|d| Arc::clone(&d.pool().replicas()))
        .unwrap();
    assert_eq!(b.ready_count(), 1);
}

#[tokio::test]
async fn a_replica_still_loading_at_the_first_probe_is_routable_soon_after_it_is_ready() {
    let replica = FakeReplica::start(503).await;
    let routing = routing(&[replica.addr]);
    let set = replicas(&routing, "a");
    // Rounds an hour apart while everything is ready; only the recovery
    // interval can bring the replica back within the test's deadline.
    let settings = HealthSettings {
        interval: Duration::from_secs(3600),
        ..fast()
    };
    let checker = HealthChecker::spawn(Arc::clone(&routing), settings);
    wait_for("unready while loading", || {
        set.replicas()[0].health() == Health::Unready
    })
    .await;
    replica.set_status(200);
    wait_for("ready once loaded", || {
        set.replicas()[0].health() == Health::Ready
    })
    .await;
    checker.abort();
}
