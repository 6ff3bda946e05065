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
        let mut proc = Proc::spawn(command(Command::new(ETCD), &[client], peer, &data), "etcd");
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
        wait_healthy(self.client);
    }
}

/// `program` (etcd, or a command that execs it) with the arguments of a
/// one-member etcd serving clients at `clients`, storing in `data`.
fn command(
    mut program: Command,
    clients: &[SocketAddr],
    peer: SocketAddr,
    data: &tempfile::TempDir,
) -> Command {
    assert!(
        Path::new(ETCD).exists(),
        "{ETCD} is missing: install Debian's etcd-server (scripts/setup.sh)"
    );
    let urls: Vec<String> = clients.iter().map(|c| format!("http://{c}")).collect();
    let peer_url = format!("http://{peer}");
    program
        .arg("--name")
        .arg("testkit")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--listen-client-urls")
        .arg(urls.join(","))
        .arg("--advertise-client-urls")
        .arg(urls.join(","))
        .arg("--listen-peer-urls")
        .arg(&peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .arg("--initial-cluster")
        .arg(format!("testkit={peer_url}"));
    program
}

fn wait_healthy(client: SocketAddr) {
    eventually("etcd reports itself healthy", || {
        health(client).is_some_and(|body| body.contains(r#""health":"true""#))
    });
}

/// An etcd in a network namespace of its own, reached from the host over
/// two veth links, so that a test can cut one link (`ip link set DEV
/// down`, a real partition: packets go nowhere, nothing is refused): the
/// gateways that reach etcd over it lose etcd, the others keep it. Needs
/// root (CAP_NET_ADMIN), as `ip netns` does. The namespace and the links
/// are deleted on drop.
#[derive(Debug)]
pub struct PartitionedEtcd {
    /// The etcd process (`ip netns exec` execs it: the pid is etcd's).
    pub proc: Proc,
    namespace: String,
    /// Per link: the host side's device and etcd's client address on it.
    links: [(String, SocketAddr); 2],
    _data: tempfile::TempDir,
}

impl PartitionedEtcd {
    /// Creates the namespace and the two links, and starts etcd in it.
    pub fn start() -> Self {
        let id = std::process::id() % 10_000_000;
        let namespace = format!("testkit-etcd-{id}");
        ip(&["netns", "add", &namespace]);
        // Subnets from the pid, so that test binaries running at once
        // (each its own pid) do not collide.
        let net = 100 + (id % 100) as u8;
        let mut links = Vec::new();
        for (i, side) in ["a", "b"].into_iter().enumerate() {
            let (host, inner) = (format!("tk{id}{side}h"), format!("tk{id}{side}e"));
            let subnet = format!("10.{net}.{}", i + 1);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &namespace]);
            ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &host]);
            ip(&["link", "set", &host, "up"]);
            ip(&[
                "netns",
                "exec",
                &namespace,
                "ip",
                "addr",
                "add",
                &format!("{subnet}.2/24"),
                "dev",
                &inner,
            ]);
            ip(&[
                "netns", "exec", &namespace, "ip", "link", "set", &inner, "up",
            ]);
            let client: SocketAddr = format!("{subnet}.2:2379").parse().unwrap();
            links.push((host, client));
        }
        ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"]);
        let data = tempfile::Builder::new()
            .prefix("testkit-etcd-")
            .tempdir()
            .unwrap();
        let clients: Vec<SocketAddr> = links.iter().map(|(_, c)| *c).collect();
        let mut inside = Command::new("ip");
        inside.args(["netns", "exec", &namespace, ETCD]);
        let peer: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        let mut proc = Proc::spawn(
            command(inside, &clients, peer, &data),
            "etcd in a namespace",
        );
        proc.addr = clients[0];
        wait_healthy(clients[0]);
        wait_healthy(clients[1]);
        Self {
            proc,
            namespace,
            links: [links[0].clone(), links[1].clone()],
            _data: data,
        }
    }

    /// A node file's `[fleet]` table reaching etcd over link `link` (0 or 1).
    pub fn fleet_table(&self, link: usize, prefix: &str) -> String {
        format!(
            "[fleet]\nendpoints = [\"http://{}\"]\nprefix = \"{prefix}\"\n",
            self.links[link].1
        )
    }

    /// Cuts link `link`: its host side goes down.
    pub fn cut(&self, link: usize) {
        ip(&["link", "set", &self.links[link].0, "down"]);
    }

    /// Brings link `link` back.
    pub fn restore(&self, link: usize) {
        ip(&["link", "set", &self.links[link].0, "up"]);
    }
}

impl Drop for PartitionedEtcd {
    fn drop(&mut self) {
        for (host, _) in &self.links {
            let _ = Command::new("ip").args(["link", "del", host]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {} (network namespaces need root)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
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
