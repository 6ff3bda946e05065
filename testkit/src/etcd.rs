//! A real etcd (Debian's `etcd-server`) on loopback for fleet tests: one
//! member, its data in a temp dir, ports chosen at run time, stopped by
//! its pid when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::gateway::{Gateway, Launch, start_text};
use crate::process::Proc;
use crate::wait::eventually;
use crate::{KEY, dead_addr, key_entry};

/// Where Debian installs the server.
const ETCD: &str = "/usr/bin/etcd";

/// A running single-member etcd.
#[derive(Debug)]
pub struct Etcd {
    /// The process.
    pub proc: Proc,
    /// Its client address.
    pub client: SocketAddr,
    peer: SocketAddr,
    data: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports itself healthy.
    pub fn start() -> Self {
        let data = tempfile::Builder::new()
            .prefix("testkit-etcd-")
            .tempdir()
            .unwrap();
        let (client, peer) = (dead_addr(), dead_addr());
        Self::launch(client, peer, data)
    }

    fn launch(client: SocketAddr, peer: SocketAddr, data: tempfile::TempDir) -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server (scripts/setup.sh)"
        );
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let mut command = Command::new(ETCD);
        command
            .arg("--name")
            .arg("testkit")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("testkit={peer_url}"));
        let mut proc = Proc::spawn(command, "etcd");
        proc.addr = client;
        let etcd = Self {
            proc,
            client,
            peer,
            data,
        };
        etcd.wait_healthy();
        etcd
    }

    /// Stops it (SIGKILL), keeping its data and ports for [`Self::resume`].
    pub fn stop(self) -> Stopped {
        let Self {
            proc,
            client,
            peer,
            data,
        } = self;
        drop(proc);
        Stopped { client, peer, data }
    }

    /// `http://{client}`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// A node file's `[fleet]` table naming this etcd and `prefix`.
    pub fn fleet_table(&self, prefix: &str) -> String {
        format!(
            "[fleet]\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n",
            self.endpoint()
        )
    }

    fn wait_healthy(&self) {
        eventually("etcd reports itself healthy", || {
            health(self.client).is_some_and(|body| body.contains(r#""health":"true""#))
        });
    }
}

/// An etcd stopped by [`Etcd::stop`].
#[derive(Debug)]
pub struct Stopped {
    client: SocketAddr,
    peer: SocketAddr,
    data: tempfile::TempDir,
}

impl Stopped {
    /// Starts it again on the same ports and data.
    pub fn resume(self) -> Etcd {
        Etcd::launch(self.client, self.peer, self.data)
    }
}

/// `GET /health`'s body, if etcd answers.
fn health(client: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&client, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A fleet node's own file: port 0 listeners, the tests' server settings
/// (two threads, replica ids exposed), `[node] name`, and `fleet`.
pub fn node_text(name: &str, fleet: &str, extra: &str) -> String {
    format!(
        "[listeners]\npredict = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[server]\nthreads = 2\ngrace_period_secs = 10\nexpose_replica_id = true\n[node]\nname = \"{name}\"\n{extra}\n{fleet}"
    )
}

/// The shared document the tests push: the test key, the admin key
/// ([`crate::admin::ADMIN`]), then `body`.
pub fn shared_text(body: &str) -> String {
    format!(
        "{}{}\n{body}",
        key_entry(KEY, "test", "\"all\""),
        key_entry(crate::admin::ADMIN, "ops", "\"admin\"")
    )
}

/// Starts a fleet node named `name` and waits for its ready line.
pub fn node(name: &str, fleet: &str) -> Gateway {
    let launch = Launch {
        log_level: "info",
        ..Launch::default()
    };
    start_text(&node_text(name, fleet, ""), &launch)
}

/// `gateway config push --config NODE FILE` (`FILE` holding `text`): its
/// exit success and its standard output.
pub fn push(node: &Path, text: &str, extra: &[&str]) -> (bool, String) {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let output = Command::new(crate::binary("gateway"))
        .arg("config")
        .arg("push")
        .arg("--config")
        .arg(node)
        .args(extra)
        .arg(file.path())
        .output()
        .expect("run gateway config push");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

/// `gateway config pull --config NODE`: the document, or `Err` with stderr.
pub fn pull(node: &Path) -> Result<String, String> {
    let output = Command::new(crate::binary("gateway"))
        .arg("config")
        .arg("pull")
        .arg("--config")
        .arg(node)
        .output()
        .expect("run gateway config pull");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
