//! The gateway's Prometheus exposition: installs the recorder, renders
//! `GET /metrics` on the admin listener (scrape-time state from
//! [`control::status::collect`], process figures from [`crate::proc_metrics`]),
//! and drains histogram samples every few seconds so memory stays flat
//! between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use routing::Routing;

use crate::conn_limit::ConnLimit;
use crate::overload::InFlightCap;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use routing::telemetry::{self, COLD_START_BUCKETS, LATENCY_BUCKETS};

/// How often recorded histogram samples are folded into their buckets.
/// The exporter keeps each sample (8 bytes) until then: at 30k requests/s
/// and four histograms per request, 5 s held 10 MiB; 1 s holds 2.
const UPKEEP: Duration = Duration::from_secs(1);

/// Renders the exposition.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    routing: Arc<Routing>,
    listeners: Listeners,
    conns: Arc<ConnLimit>,
    in_flight: Arc<InFlightCap>,
}

/// Ports that tell downstream connections from upstream ones.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// The predict listener.
    pub predict: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// Installs the process-wide recorder. Must run before the first snapshot
/// is built: routes resolve their handles from the recorder present then.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::REPLICA_COLD_START.into()),
            COLD_START_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    telemetry::describe();
    Ok(handle)
}

impl Exporter {
    /// An exporter over `routing`'s current snapshot.
    pub fn new(
        handle: PrometheusHandle,
        routing: Arc<Routing>,
        listeners: Listeners,
        conns: Arc<ConnLimit>,
        in_flight: Arc<InFlightCap>,
    ) -> Self {
        Self {
            handle,
            routing,
            listeners,
            conns,
            in_flight,
        }
    }

    /// The Prometheus text exposition, as of now.
    pub fn render(&self) -> String {
        control::status::collect(&self.routing.load());
        let mut text = self.handle.render();
        crate::proc_metrics::render(&mut text, self.listeners);
        render_connections(&mut text, &self.conns);
        render_in_flight(&mut text, &self.in_flight);
        text
    }
}

/// The client-connection cap's figures.
fn render_connections(out: &mut String, conns: &ConnLimit) {
    let families = [
        (
            "igw_client_connections_limit",
            "gauge",
            "Client connections the predict listeners hold at most (max_connections, lowered to fit the open-files limit).",
            conns.limit() as f64,
        ),
        (
            "igw_client_connections_admitted",
            "gauge",
            "Client connections open on the predict listeners now.",
            conns.open() as f64,
        ),
        (
            "igw_client_connections_evicted_total",
            "counter",
            "Idle client connections closed to admit new ones at the cap.",
            conns.evicted() as f64,
        ),
        (
            "igw_client_connections_refused_total",
            "counter",
            "Client connections closed on arrival: at the cap, every open one had a request in progress.",
            conns.refused() as f64,
        ),
    ];
    write_families(out, &families);
}

/// The in-flight cap's figures, named like the connection cap's.
fn render_in_flight(out: &mut String, cap: &InFlightCap) {
    let families = [
        (
            "igw_client_requests_limit",
            "gauge",
            "Predict requests the gateway holds at most, parked ones included (max_in_flight).",
            cap.limit() as f64,
        ),
        (
            "igw_client_requests_admitted",
            "gauge",
            "Predict requests the gateway holds now, parked ones included.",
            cap.held() as f64,
        ),
        (
            "igw_client_requests_refused_total",
            "counter",
            "Predict requests answered 503 at once: the gateway held max_in_flight already.",
            cap.refused() as f64,
        ),
    ];
    write_families(out, &families);
}

/// Gauges and counters without labels, each with its help and type.
fn write_families(out: &mut String, families: &[(&str, &str, &str, f64)]) {
    use std::fmt::Write;
    for (name, kind, help, value) in families {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
}

#[async_trait]
impl BackgroundService for Exporter {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::shutdown::every(UPKEEP, shutdown, || self.handle.run_upkeep()).await;
    }
}
