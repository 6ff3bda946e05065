//! Health checking: every replica of every deployment in the current
//! snapshot is asked `GET /health/ready` at a fixed interval, and the outcome
//! is recorded on the replica itself (see [`Health`]), where
//! [`routing::ReplicaSet::claim`] skips unready replicas and deployment status and
//! promotion read [`routing::ReplicaSet::ready_count`]. A replica that becomes ready
//! again hands its slots to parked requests at once.
//!
//! Health lives on the shared [`Replica`], so it carries over config
//! reloads exactly as in-flight counts do; a replica at a new address starts
//! from [`Health::Unknown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use routing::Routing;
use routing::pool::Pool;
use routing::replicas::{Health, Replica};

use crate::plane::ShutdownSignal;

/// What engine replicas serve: 200 when ready, 503 while loading or draining.
pub const READY_PATH: &str = "/health/ready";

/// How often and how patiently to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Between the starts of two rounds. A round that takes longer (probes
    /// up to `timeout`) delays the next one rather than overlapping it.
    pub interval: Duration,
    /// Limit on one probe, from connecting to the response head. Replicas
    /// are on loopback or the LAN: a healthy one answers in milliseconds.
    pub timeout: Duration,
    /// Consecutive failed probes that make a ready replica unready.
    pub failure_threshold: u32,
    /// Between rounds while some replica is not ready: a replica that is
    /// still loading when first probed becomes routable this soon after it
    /// is ready, not a whole `interval` later.
    pub recovery_interval: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            failure_threshold: 2,
            recovery_interval: Duration::from_millis(250),
        }
    }
}

/// Probes the replicas of whatever snapshot [`Routing`] currently serves.
#[derive(Debug)]
pub struct HealthChecker {
    routing: Arc<Routing>,
    settings: HealthSettings,
}

impl HealthChecker {
    /// A checker of `routing`'s replicas.
    pub fn new(routing: Arc<Routing>, settings: HealthSettings) -> Self {
        Self { routing, settings }
    }

    /// Runs the checker as a task on the current tokio runtime, until the
    /// task is aborted.
    pub fn spawn(routing: Arc<Routing>, settings: HealthSettings) -> JoinHandle<()> {
        tokio::spawn(Self::new(routing, settings).run(ShutdownSignal::never()))
    }

    /// Probes every `interval` (every `recovery_interval` while some
    /// replica is not ready), starting at once, until `shutdown`.
    pub async fn run(self, mut shutdown: ShutdownSignal) {
        loop {
            let started = tokio::time::Instant::now();
            let round = async {
                let period = if self.check_once().await {
                    self.settings.interval
                } else {
                    self.settings.recovery_interval
                };
                // Between the starts of rounds; a slow round delays the next.
                tokio::time::sleep_until(started + period).await;
            };
            tokio::select! {
                () = round => {}
                () = shutdown.requested() => return,
            }
        }
    }

    /// One round: probes every replica of every deployment (active or not:
    /// a deployment being promoted may not serve yet) concurrently, records
    /// the outcomes, and returns when all are in: whether every replica is
    /// now ready.
    pub async fn check_once(&self) -> bool {
        // Owned sets, so that no snapshot guard lives across an await; a
        // snapshot published meanwhile is picked up by the next round.
        let pools: Vec<Arc<Pool>> = self
            .routing
            .load()
            .deployments()
            .map(|d| Arc::clone(d.pool()))
            .collect();
        let settings = self.settings;
        let mut probes = JoinSet::new();
        for pool in pools {
            // Between probes, live traffic's verdict: slow replicas out.
            pool.eject_slow_replicas();
            for replica in pool.replicas().replicas() {
                let (pool, replica) = (Arc::clone(&pool), Arc::clone(replica));
                probes.spawn(async move {
                    match probe(replica.addr(), settings.timeout).await {
                        // Out of descriptors or ports: no verdict on the
                        // replica, which keeps its state.
                        Err(ProbeError::Local(e)) => {
                            log::warn!("cannot probe replica {}: {e}", replica.addr());
                        }
                        outcome => {
                            let change =
                                record(&replica, outcome.as_ref(), settings.failure_threshold);
                            if let Some(health) = change {
                                pool.health_changed(health);
                            }
                        }
                    }
                    replica.health() == Health::Ready
                });
            }
        }
        let mut all_ready = true;
        while let Some(done) = probes.join_next().await {
            match done {
                Ok(ready) => all_ready &= ready,
                Err(e) => {
                    all_ready = false;
                    log::error!("health probe task failed: {e}");
                }
            }
        }
        all_ready
    }
}

/// Applies one outcome, logs a change (a failure that changes nothing only
/// at debug level: a replica that is down fails every round) and returns it.
fn record(
    replica: &Replica,
    outcome: Result<&(), &ProbeError>,
    failure_threshold: u32,
) -> Option<Health> {
    let addr = replica.addr();
    let change = replica.record_probe(outcome.is_ok(), failure_threshold);
    match (change, outcome) {
        (Some(Health::Ready), _) => log::info!("replica {addr} is ready"),
        (Some(_), Err(why)) => log::warn!("replica {addr} is unready: {why}"),
        (None, Err(why)) => log::debug!("replica {addr} failed a health probe: {why}"),
        _ => {}
    }
    change
}

/// Why a probe did not pass. All but [`ProbeError::Local`] count against
/// the replica.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// No answer within the probe's limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The replica refused or dropped the connection.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP/1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    /// The request could not be built (an address that is no valid Host).
    #[error("request: {0}")]
    Build(http::Error),
    /// The exchange failed before a response head.
    #[error("request: {0}")]
    Exchange(hyper::Error),
    /// An answer, but not a 2xx.
    #[error("status {0}")]
    Status(http::StatusCode),
    /// The gateway could not even try: it is out of file descriptors or
    /// local ports. No verdict on the replica.
    #[error("connect: {0} (the gateway's own shortage)")]
    Local(std::io::Error),
}

/// Whether the replica answers the readiness probe with a 2xx within
/// `limit`; if not, why not, for the log.
pub(crate) async fn probe(addr: SocketAddr, limit: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(limit, ask_ready(addr)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Timeout(limit)),
    }
}

async fn ask_ready(addr: SocketAddr) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        if routing::shortage::is_local_shortage(&e) {
            ProbeError::Local(e)
        } else {
            ProbeError::Connect(e)
        }
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Handshake)?;
    // A fresh connection per probe, closed after it: a probe must see a
    // replica that can accept connections, not one kept-alive socket.
    let request = Request::get(READY_PATH)
        .header(header::HOST, addr.to_string())
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Build)?;
    // Queued now; `connection` does the I/O. Only the status matters, so
    // stop as soon as the head is in. If the connection ends first (e.g. it
    // delivered the response, then closed), the answer is already queued
    // for `response`, or it fails with the reason.
    let response = sender.send_request(request);
    let mut response = std::pin::pin!(response);
    let response = tokio::select! {
        response = &mut response => response,
        _ = connection => response.await,
    }
    .map_err(ProbeError::Exchange)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings() {
        let s = HealthSettings::default();
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.failure_threshold, 2);
    }

    #[tokio::test]
    async fn a_closed_port_fails_the_probe() {
        // Bind then drop: nothing listens there any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let why = probe(addr, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(why, ProbeError::Connect(_)), "{why}");
        assert!(why.to_string().starts_with("connect"), "{why}");
    }

    #[tokio::test]
    async fn a_silent_replica_times_out() {
        // Accepts (the kernel does, from the backlog) but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let why = probe(addr, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(why, ProbeError::Timeout(_)), "{why}");
        drop(listener);
    }
}
