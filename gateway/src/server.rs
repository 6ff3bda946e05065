//! Wires the Pingora server: predict and admin services, shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use config::{Config, ConfigErrors};
use control::api::Api;
use control::capacity::NodeCapacity;
use control::fleet::{
    FleetConfig, FleetError, Leader, NodeRecord, Placement, Registry, SharedDocument, Versioned,
};
use control::plane::Plane;
use control::promotion::Promotions;
use control::provision::{LocalProvisioner, LocalSettings};
use control::scaling::{Controller, ScalingSettings};
use control::store::ConfigStore;
use control::usage::{UsageLedger, UsageMeter};
use control::{HealthChecker, HealthSettings, Reloader, WatchError};
use pingora_core::listeners::{ListenerConfig, TcpSocketOptions};
use pingora_core::protocols::TcpKeepalive;
use pingora_core::protocols::l4::stream::{DEFAULT_L4_READ_BUFFER_SIZE, L4BufferSettings};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use routing::{Routing, Snapshot};

use pingora_core::services::background::background_service;

use crate::access_log::AccessLogger;
use crate::admin::Admin;
use crate::conn_limit::ConnLimit;
use crate::connections::{Connections, Sweeper};
use crate::fd_limit;
use crate::http1::HeadLimits;
use crate::listen::{Bound, Prebound};
use crate::overload::InFlightCap;
use crate::predict::{self, ClientLimits, Gateway, Recording, UpstreamSettings};
use crate::shutdown::{self, InFlight};
use crate::telemetry::{self, Exporter};
use crate::tls::{self, Certificates, TlsError};
use crate::upgrade::{self, Predecessor, Signals, UpgradeError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file cannot be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// A fleet node could not read its fleet's shared document.
    #[error("cannot read the fleet's shared config: {0}")]
    Fleet(#[from] FleetError),
    /// The fleet's shared document is invalid for this node.
    #[error("invalid shared config:\n{0}")]
    SharedConfig(ConfigErrors),
    /// The control plane's runtime could not start.
    #[error("cannot start the control plane: {0}")]
    ControlPlane(std::io::Error),
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// The access log cannot be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    /// The TLS listener's certificate or key cannot be used.
    #[error("TLS listener")]
    Tls(#[from] TlsError),
    /// `--upgrade`: the running gateway did not hand over.
    #[error("upgrade")]
    Upgrade(#[from] UpgradeError),
    /// Another process listens on a listener's address. (`error` is in the
    /// message and deliberately not its `source`, which `{:#}` would print a
    /// second time.)
    #[error(
        "cannot listen for {listener} on {address}: {error}; another process holds it: stop it or change {setting}"
    )]
    AddressInUse {
        /// `predict`, `admin` or `TLS`.
        listener: &'static str,
        /// The config key that sets the address.
        setting: &'static str,
        /// The address configured.
        address: SocketAddr,
        /// What `bind` said.
        error: io::Error,
    },
    /// A listener's address cannot be bound for another reason: not an
    /// address of this host, a port below 1024 without the privilege.
    #[error("cannot listen for {listener} on {address}: {error}; check {setting}")]
    Listen {
        /// `predict`, `admin` or `TLS`.
        listener: &'static str,
        /// The config key that sets the address.
        setting: &'static str,
        /// The address configured.
        address: SocketAddr,
        /// What `bind` said.
        error: io::Error,
    },
    /// `--upgrade` with a listener on port 0: the new process takes over
    /// the running one's sockets by address, so it must name their ports.
    #[error(
        "serve --upgrade cannot take over {listener} on port 0: set {setting} to the port the running gateway listens on"
    )]
    UpgradePortZero {
        /// `predict`, `admin` or `TLS`.
        listener: &'static str,
        /// The config key that sets the address.
        setting: &'static str,
    },
}

/// Connects to the fleet `node` (a node file's config) names and reads its
/// shared document: the document, the etcd revision read, and the config
/// this node serves (the document joined to its file's sections).
async fn join_fleet(
    node: &Config,
    node_path: &Path,
) -> Result<(SharedDocument, Versioned, Config), StartError> {
    let document = SharedDocument::connect(node.clone(), node_path).await?;
    let current = document.get().await?;
    if current.revision == 0 {
        log::warn!(
            "{} holds no document yet: serving no models until one is pushed (gateway config push)",
            document.origin()
        );
    }
    let config = document
        .load(&current.text)
        .map_err(StartError::SharedConfig)?;
    log::info!(
        "fleet config {}: etcd revision {}",
        document.origin(),
        current.revision
    );
    Ok((document, current, config))
}

/// The node's name in its fleet: `[node] name`, or the host name.
fn node_name(config: &Config) -> String {
    config.node.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "gateway".to_owned())
    })
}

/// Prints the ready line on stdout: the listeners are bound and listening
/// (connections made from now on wait in the backlog until the services
/// accept them), so whoever started the gateway may connect.
fn announce(bound: &Bound) {
    use std::io::Write;
    let mut stdout = io::stdout().lock();
    if writeln!(stdout, "{}", bound.ready_line())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        log::warn!("could not print the ready line");
    }
}

/// How long exiting waits for the control plane's loops to end (the
/// scaling controller's is the long one: it stops the local replicas).
const CONTROL_STOP_LIMIT: Duration = Duration::from_secs(15);

/// Runs the gateway until a signal stops it: SIGTERM drains in-flight
/// requests (up to the grace period), SIGINT exits at once, SIGQUIT hands
/// over to a new process started with `upgrade` ([`crate::upgrade`]).
/// Changes to the file at `config_path` are applied while it runs.
pub fn run(config: &Config, config_path: &Path, upgrade: bool) -> Result<(), StartError> {
    let upgrade_paths = upgrade::Paths::for_config(config, config_path)?;
    // First, so that nothing (replicas, threads, the "serving" line) starts
    // when a port is taken, or when there is nobody to take them from.
    let (predecessor, mut bound) = if upgrade {
        let bound = Bound::handed_over(&config.listeners)?;
        (Some(Predecessor::listen(&upgrade_paths)?), bound)
    } else {
        (None, Bound::bind(&config.listeners)?)
    };
    // Before the first snapshot: routes resolve their handles from it.
    let metrics = telemetry::install()?;
    // Every background loop runs on the control plane's one runtime and
    // stops with it (after the drain, or at SIGINT).
    let plane = Arc::new(Plane::start().map_err(StartError::ControlPlane)?);
    let access_log =
        match AccessLogger::start(&config.server.access_log).map_err(StartError::AccessLog)? {
            Some((logger, writer)) => {
                plane.hold("access log writer", writer);
                Some(logger)
            }
            None => None,
        };
    // A fleet node serves its file's sections joined to the fleet's
    // shared document, read from etcd before anything routes.
    let fleet = match config.fleet {
        Some(_) => Some(plane.handle().block_on(join_fleet(config, config_path))?),
        None => None,
    };
    let joined;
    let config = match &fleet {
        Some((_, _, shared)) => {
            joined = shared.clone();
            &joined
        }
        None => config,
    };
    let routing = Arc::new(Routing::new(Snapshot::new(config)));
    let nofile = fd_limit::raise();
    let cap = fd_limit::connection_cap(config.server.max_connections, nofile);
    if cap < config.server.max_connections {
        log::warn!(
            "max_connections lowered from {} to {cap} to fit the open-files limit ({}): raise it (ulimit -n, LimitNOFILE=) for more",
            config.server.max_connections,
            nofile.unwrap_or_default()
        );
    }
    let conns = ConnLimit::new(cap);
    let in_flight = Arc::new(InFlight::default());
    let in_flight_cap = Arc::new(InFlightCap::new(
        Arc::clone(&in_flight),
        config.server.max_in_flight,
    ));
    let exporter = Exporter::new(
        metrics,
        Arc::clone(&routing),
        telemetry::Listeners {
            predict: bound.predict.address,
            admin: bound.admin.address,
        },
        Arc::clone(&conns),
        Arc::clone(&in_flight_cap),
    );
    let reloader = Arc::new(Reloader::new(
        config_path,
        config.clone(),
        Arc::clone(&routing),
    ));
    let (store, following) = match fleet {
        Some((document, initial, _)) => {
            let name = node_name(config);
            let record = NodeRecord {
                name: name.clone(),
                predict: bound.predict.address,
                admin: bound.admin.address,
                cpu_millis: config.node.cpu_millis,
                memory_mib: config.node.memory_mib,
            };
            let registry = Registry::new(document.clone(), Arc::clone(&routing), record);
            plane.spawn("fleet registry", |shutdown| registry.run(shutdown));
            let fleet = Arc::new(FleetConfig::new(
                document.clone(),
                Arc::clone(&reloader),
                initial,
            ));
            let follow = Arc::clone(&fleet);
            plane.spawn("fleet config", |shutdown| follow.run(shutdown));
            let store = ConfigStore::fleet(Arc::clone(&fleet), reloader, plane.handle().clone());
            (store, Some((fleet, document, name)))
        }
        None => {
            plane.hold("config reload", Arc::clone(&reloader).watch()?);
            (ConfigStore::new(config_path, reloader), None)
        }
    };
    let store = Arc::new(store);
    let usage = Arc::new(UsageLedger::beside(config_path));
    let mut meter = UsageMeter::new(
        Arc::clone(&routing),
        Arc::clone(&usage),
        config.server.usage_interval,
    );
    if let Some((fleet, _, name)) = &following {
        meter = meter.in_fleet(Arc::clone(fleet), name);
    }
    plane.spawn("usage meter", |shutdown| meter.run(shutdown));
    let promotions = Promotions::in_fleet(
        Arc::clone(&routing),
        Arc::clone(&store),
        plane.handle().clone(),
        plane.signal(),
        following
            .as_ref()
            .map(|(fleet, _, name)| (Arc::clone(fleet), name.clone())),
    );
    if following.is_some() {
        let follow = Arc::clone(&promotions);
        plane.spawn("fleet rollouts", |shutdown| {
            follow.follow_new_rollouts(shutdown)
        });
    }
    let api = Arc::new(Api::new(Arc::clone(&routing), store, usage, promotions));
    let checker = HealthChecker::new(Arc::clone(&routing), HealthSettings::default());
    plane.spawn("health checks", |shutdown| checker.run(shutdown));

    let threads = config.server.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t as usize,
    );
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: upgrade_paths.listeners.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    // In an upgrade, the running gateway's replicas come first (its
    // answer to SIGQUIT), then its listening sockets (`bootstrap`).
    let handover = predecessor.map(Predecessor::receive).transpose()?;
    let opt = Opt {
        upgrade: handover.is_some(),
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    // After the handover: adopted replicas count as running from the
    // controller's first pass, so none is started in their place.
    let events = Arc::new(tokio::sync::Notify::new());
    let provisioner = LocalProvisioner::new(
        LocalSettings {
            host: config.node.replica_host,
            ..LocalSettings::new(config.node.engine_binary.clone())
        },
        Arc::clone(&events),
    );
    let placement = following.as_ref().map(|(fleet, document, name)| {
        let placement = Arc::new(Placement::new(name, Arc::clone(&events)));
        let follow = Arc::clone(&placement);
        let watched = document.clone();
        plane.spawn("fleet placement", |shutdown| follow.run(watched, shutdown));
        let leader = Leader::new(
            document.clone(),
            Arc::clone(&routing),
            Arc::clone(fleet),
            name,
        );
        plane.spawn("fleet leader", |shutdown| leader.run(shutdown));
        placement
    });
    let mut controller = Controller::new(
        Arc::clone(&routing),
        Arc::new(provisioner),
        events,
        NodeCapacity::from_config(&config.node),
        ScalingSettings {
            max_failed_starts: config.server.max_failed_starts,
            ..ScalingSettings::default()
        },
    )
    .adopting(handover.map(|h| h.replicas).unwrap_or_default());
    if let Some(placement) = placement {
        controller = controller.placed_by(placement);
    }
    let scaling = controller.handle();
    plane.spawn("scaling controller", |shutdown| controller.run(shutdown));

    let settings = &config.server;
    let upstream = UpstreamSettings {
        connect_timeout: settings.upstream_connect_timeout,
        first_byte_timeout: settings.upstream_first_byte_timeout,
        read_timeout: settings.upstream_read_timeout,
        max_request_body_bytes: settings.max_request_body_bytes,
        request_timeout: settings.request_timeout,
        response_buffer_bytes: settings.response_buffer_bytes,
        forwarded_for: settings.forwarded_for,
        expose_replica_id: settings.expose_replica_id,
    };
    let recording = Recording {
        request_metrics: config.server.request_metrics,
        access_log,
    };
    let connections = Arc::new(Connections::new(
        config.server.upstream_keepalive_pool_size,
        config.server.upstream_idle_timeout,
    ));
    let client_limits = ClientLimits {
        idle_timeout: config.server.keepalive_timeout,
        head_timeout: config.server.client_header_timeout,
        body_timeout: config.server.client_body_timeout,
        send_timeout: config.server.client_send_timeout,
        head: HeadLimits {
            max_head_bytes: config.server.max_request_head_bytes,
            max_uri_bytes: config.server.max_uri_bytes,
        },
    };
    let gateway = Gateway::new(
        routing,
        upstream,
        Arc::clone(&connections),
        in_flight_cap,
        recording,
        client_limits,
    );
    let mut predict = Service::new("predict".to_owned(), predict::Listener::new(gateway, conns));
    let mut predict_sockets: Vec<_> = bound.predict.take().into_iter().collect();
    let mut socket = TcpSocketOptions::default();
    socket.tcp_keepalive = settings.tcp_keepalive.map(|idle| TcpKeepalive {
        idle,
        interval: Duration::from_secs(10),
        count: 6,
        user_timeout: Duration::ZERO,
    });
    // A write buffer that holds a multi-KB predict response with its head,
    // so that it leaves in one send (Pingora's default is one MSS). No read
    // buffer on the plain listener: HTTP/1 connections read into their own
    // (`http1::ServerConn`), HTTP/2 into the h2 codec's, so one would only
    // add a copy. Under TLS it stays: OpenSSL reads a record's 5-byte
    // header and then its body, two system calls without it.
    let buffers = L4BufferSettings::new(0, 64 * 1024);
    let tls_buffers = L4BufferSettings::new(DEFAULT_L4_READ_BUFFER_SIZE, 64 * 1024);
    predict.add_listener(
        ListenerConfig::tcp(bound.predict.key())
            .tcp_socket_options(socket.clone())
            .l4_buffer(buffers),
    );
    if let (Some(tls), Some(tls_socket)) = (&config.listeners.tls, &mut bound.tls) {
        let certificates = Certificates::load(&tls.cert, &tls.key)?;
        predict_sockets.extend(tls_socket.take());
        predict.add_listener(
            ListenerConfig::tcp(tls_socket.key())
                .tcp_socket_options(socket)
                .tls(certificates.settings()?)
                .l4_buffer(tls_buffers),
        );
        server.add_service(background_service(
            "TLS certificate reload",
            tls::Reloader(certificates),
        ));
    }
    server.add_service(Prebound::new(predict, predict_sockets));
    server.add_service(background_service(
        "replica connection sweeper",
        Sweeper(connections),
    ));

    let mut admin = Admin::new(api, exporter.clone());
    if let Some((fleet, _, _)) = following {
        admin = admin.following(fleet);
    }
    let mut admin = Service::new("admin".to_owned(), admin);
    admin.add_tcp(&bound.admin.key());
    admin.threads = Some(1);
    server.add_service(Prebound::new(
        admin,
        bound.admin.take().into_iter().collect(),
    ));
    server.add_service(background_service("metrics upkeep", exporter));

    let drained = Arc::clone(&plane);
    shutdown::exit_when_drained(server.watch_execution_phase(), in_flight, move || {
        drained.shutdown(CONTROL_STOP_LIMIT);
    });
    log::info!(
        "serving {} model(s): predict on {}, admin on {}",
        config.models.len(),
        bound.predict.address,
        bound.admin.address
    );
    announce(&bound);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals::new(upgrade_paths, scaling)),
    });
    // Fast shutdown (SIGINT) ends up here; replicas go with the gateway.
    plane.shutdown(CONTROL_STOP_LIMIT);
    Ok(())
}
