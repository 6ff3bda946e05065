//! `gateway serve` as a child process: on port 0 listeners, ready when its
//! ready line (`config::GatewayReady`) says where it listens.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

use config::GatewayReady;

use crate::KEY;
use crate::fixture::key_entry;
use crate::process::{Proc, READY_LIMIT, binary};

/// A running gateway with its config file.
#[derive(Debug)]
pub struct Gateway {
    /// The process; its `addr` is the predict listener.
    pub proc: Proc,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The TLS listener, when configured.
    pub tls: Option<SocketAddr>,
    pub config: tempfile::NamedTempFile,
}

impl Gateway {
    /// `http://{predict}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proc.addr)
    }

    /// `http://{admin}{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The predict listener.
    pub fn predict(&self) -> SocketAddr {
        self.proc.addr
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    fn ready(&mut self, ready: GatewayReady) {
        self.proc.addr = ready.predict;
        self.admin = ready.admin;
        self.tls = ready.tls;
    }
}

/// How a gateway is started.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// A command that execs the gateway (so the pid stays the gateway's),
    /// e.g. `["prlimit", "--nofile=256:256", "--"]`.
    pub wrapper: &'a [&'a str],
    /// `RUST_LOG`.
    pub log_level: &'a str,
    /// Extra arguments after `serve --config FILE`.
    pub args: &'a [&'a str],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Self {
            wrapper: &[],
            log_level: "warn",
            args: &[],
        }
    }
}

/// Starts `gateway serve --config config` as `launch` says.
pub fn spawn(config: &Path, launch: &Launch<'_>) -> Proc {
    let bin = binary("gateway");
    let mut command = match launch.wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin);
            command
        }
        None => Command::new(bin),
    };
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(launch.args)
        .env("RUST_LOG", launch.log_level);
    Proc::spawn(command, "gateway")
}

/// Reads the gateway's ready line (`Err` with its log if it exits first).
pub fn read_ready(proc: &mut Proc) -> Result<GatewayReady, String> {
    let line = proc.read_line(READY_LIMIT)?;
    GatewayReady::parse(&line).map_err(|e| format!("{e}; log:\n{}", proc.stderr()))
}

/// The config the tests' gateways start from: these listeners, two worker
/// threads, a 10 s grace period, the replica id exposed (the tests tell
/// replicas apart by it; a test of the default sets `expose_replica_id` in
/// `server`), `server` lines, the test key, then `body`.
pub fn config_text(predict: SocketAddr, admin: SocketAddr, server: &str, body: &str) -> String {
    let expose = if server.contains("expose_replica_id") {
        ""
    } else {
        "expose_replica_id = true\n"
    };
    format!(
        "[listeners]\npredict = \"{predict}\"\nadmin = \"{admin}\"\n[server]\nthreads = 2\ngrace_period_secs = 10\n{expose}{server}\n{}\n{body}",
        key_entry(KEY, "test", "\"all\"")
    )
}

/// `127.0.0.1:0`.
pub fn port_zero() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Starts a gateway on a config file of exactly `text` and waits for its
/// ready line.
pub fn start_text(text: &str, launch: &Launch<'_>) -> Gateway {
    try_start_text(text, launch).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
}

fn try_start_text(text: &str, launch: &Launch<'_>) -> Result<Gateway, String> {
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(config.path(), text).unwrap();
    let mut proc = spawn(config.path(), launch);
    let ready = read_ready(&mut proc)?;
    let mut gw = Gateway {
        proc,
        admin: ready.admin,
        tls: None,
        config,
    };
    gw.ready(ready);
    Ok(gw)
}

/// Starts the gateway on port 0 listeners with `body` appended to the
/// tests' config ([`config_text`]) and waits until it is ready.
pub fn gateway(body: &str) -> Gateway {
    gateway_with("", body)
}

/// Like [`gateway`], with extra lines for the `[server]` table.
pub fn gateway_with(server: &str, body: &str) -> Gateway {
    gateway_through(&[], server, body)
}

/// Like [`gateway_with`], the gateway started by `wrapper`, a command that
/// execs it, e.g. `["prlimit", "--nofile=256:256", "--"]`.
pub fn gateway_through(wrapper: &[&str], server: &str, body: &str) -> Gateway {
    let launch = Launch {
        wrapper,
        ..Launch::default()
    };
    start_text(
        &config_text(port_zero(), port_zero(), server, body),
        &launch,
    )
}

/// Like [`gateway_with`] on ports written out in the config (free a moment
/// before): for `serve --upgrade`, which must name the ports it takes over.
pub fn gateway_on_fixed_ports(server: &str, body: &str) -> Gateway {
    for _ in 0..5 {
        let text = config_text(free_addr(), free_addr(), server, body);
        if let Ok(gw) = try_start_text(&text, &Launch::default()) {
            return gw;
        }
        // A port was taken meanwhile: try others.
    }
    panic!("the gateway did not start on free ports five times");
}

/// Starts the gateway again on the same config file, after it exited, and
/// waits until it is ready (on new ports, if the config says port 0).
pub fn restart(gw: &mut Gateway) {
    gw.proc = spawn(gw.config.path(), &Launch::default());
    let ready = read_ready(&mut gw.proc).unwrap_or_else(|e| panic!("the restarted gateway: {e}"));
    gw.ready(ready);
}

/// Starts `gateway serve --upgrade` on `gw`'s config file: a new process
/// that waits for the running one to hand over (SIGQUIT it); its ready line
/// comes once it has the sockets ([`read_ready`]).
pub fn start_upgrade(gw: &Gateway) -> Proc {
    spawn(
        gw.config.path(),
        &Launch {
            log_level: "info",
            args: &["--upgrade"],
            ..Launch::default()
        },
    )
}

/// A `gateway serve` on a config file of exactly `text`, logging at `info`,
/// not waited for: for the tests of how it starts, or fails to.
#[derive(Debug)]
pub struct Serving {
    pub proc: Proc,
    pub config: tempfile::NamedTempFile,
}

impl Serving {
    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// Waits for its ready line (`Err` with its log if it exits first).
    pub fn ready(&mut self) -> Result<GatewayReady, String> {
        read_ready(&mut self.proc)
    }
}

/// Starts `gateway serve` on a config of exactly `text`.
pub fn serve_text(text: &str) -> Serving {
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(config.path(), text).unwrap();
    let proc = spawn(
        config.path(),
        &Launch {
            log_level: "info",
            ..Launch::default()
        },
    );
    Serving { proc, config }
}

/// An address nothing listened on a moment ago (for a config that must
/// name a port).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
