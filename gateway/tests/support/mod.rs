//! Real processes on loopback for end-to-end tests: engine replicas and the
//! gateway, each killed by its own pid when its guard drops.

// Plain threads and wall-clock deadlines: this harness runs outside any runtime.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)]

pub mod admin;
pub mod raw;
pub mod replica;
pub mod tls;
pub mod wire;

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The demo key the configs below accept with scope "all".
pub const KEY: &str = "igw_test_key";

/// A child process that is killed (by pid) when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`) to this process only.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target_dir_binary(name: &str) -> PathBuf {
    let gateway = Path::new(env!("CARGO_BIN_EXE_gateway"));
    let path = gateway.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --workspace`)",
        path.display()
    );
    path
}

/// Starts an engine replica (on port 0 unless `extra` has `--listen`) and
/// waits for its ready line.
pub fn engine(replica_id: &str, extra: &[&str]) -> Proc {
    let listen: &[&str] = if extra.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(target_dir_binary("engine"))
        .args(listen)
        .args(["--replica-id", replica_id])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn engine");
    let stdout = BufReader::new(child.stdout.take().expect("engine stdout"));
    let ready = engine::ReadyLine::read_from(stdout).expect("engine ready line");
    Proc {
        child,
        addr: ready.addr,
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway with its config file.
pub struct Gateway {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub config: tempfile::NamedTempFile,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proc.addr)
    }
}

/// Starts the gateway on fresh ports with `body` appended to a config that
/// sets the listeners and the test key, and waits until it is ready.
pub fn gateway(body: &str) -> Gateway {
    gateway_with("", body)
}

/// Like [`gateway`], with extra lines for the `[server]` table.
pub fn gateway_with(server: &str, body: &str) -> Gateway {
    gateway_through(&[], server, body)
}

/// Like [`gateway_with`], the gateway started by `wrapper`, a command that
/// execs it (so the pid stays the gateway's), e.g.
/// `["prlimit", "--nofile=256:256", "--"]`.
pub fn gateway_through(wrapper: &[&str], server: &str, body: &str) -> Gateway {
    // The tests tell replicas apart by the header the gateway hides by
    // default; a test of the default says so in `server`.
    let expose = if server.contains("expose_replica_id") {
        ""
    } else {
        "expose_replica_id = true\n"
    };
    for _ in 0..5 {
        let predict: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = format!(
            "[listeners]\npredict = \"{predict}\"\nadmin = \"{admin}\"\n[server]\nthreads = 2\ngrace_period_secs = 10\n{expose}{server}\n{}\n{body}",
            key_entry(KEY, "test", "\"all\"")
        );
        let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(config.path(), text).unwrap();
        let bin = env!("CARGO_BIN_EXE_gateway");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(config.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gateway");
        let mut proc = Proc {
            child,
            addr: predict,
        };
        if wait_ready(&mut proc, admin) {
            return Gateway {
                proc,
                admin,
                config,
            };
        }
        // Most likely a port was taken meanwhile: try new ones.
    }
    panic!("gateway did not become ready");
}

/// Starts the gateway again on the same config file and ports, after it
/// exited, and waits until it is ready.
pub fn restart(gw: &mut Gateway) {
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--config")
        .arg(gw.config.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gateway");
    gw.proc = Proc {
        child,
        addr: gw.proc.addr,
    };
    assert!(
        wait_ready(&mut gw.proc, gw.admin),
        "the restarted gateway became ready"
    );
}

/// Waits until both listeners answer their health check: Pingora starts
/// the predict and admin services separately, so one may be up first.
fn wait_ready(proc: &mut Proc, admin: SocketAddr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for addr in [proc.addr, admin] {
        loop {
            if std::time::Instant::now() >= deadline
                || proc.child.try_wait().expect("try_wait").is_some()
            {
                return false;
            }
            if answers_ok(addr) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    true
}

/// Whether `GET /readyz` at `addr` answers 200.
fn answers_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// An `[[api_keys]]` entry for `key`.
pub fn key_entry(key: &str, name: &str, scope: &str) -> String {
    format!(
        "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = {scope}\n",
        hex::encode(config::key_digest(key))
    )
}

/// An HTTP client that keeps connections alive.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs `body`, with a Host and an `Api-Key` header when given.
pub async fn post(
    url: &str,
    host: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = client().post(url).body(body.to_owned());
    if let Some(host) = host {
        req = req.header("host", host);
    }
    if let Some(key) = key {
        req = req.header("authorization", format!("Api-Key {key}"));
    }
    req.send().await.expect("request")
}

/// A response header as text (empty when missing).
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The gateway's `/metrics` exposition.
pub async fn scrape(gw: &Gateway) -> String {
    let resp = client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "GET /metrics");
    resp.text().await.expect("a metrics body")
}

/// The sum of the samples of `name`, in a Prometheus text exposition,
/// whose labels include every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let body = rest.strip_suffix('}')?;
            let has = |(k, v): &(&str, &str)| {
                body.split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\"").as_str())
            };
            labels.iter().all(has).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A `gateway serve` started on a config file of exactly `text`, its log
/// (at `info`) in a file: for the tests of how it starts, or fails to.
pub struct Serving {
    pub proc: Proc,
    pub config: tempfile::NamedTempFile,
    log: tempfile::NamedTempFile,
}

impl Serving {
    /// What it has logged (and printed to stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// Waits until both listeners answer `GET /readyz` (false if it exited
    /// or 20 s passed).
    pub fn ready(&mut self, admin: SocketAddr) -> bool {
        wait_ready(&mut self.proc, admin)
    }
}

/// Starts `gateway serve` on a config of exactly `text`; `predict` is
/// recorded as the process's address. Killed by pid when dropped.
pub fn serve_text(predict: SocketAddr, text: &str) -> Serving {
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(config.path(), text).unwrap();
    let log = tempfile::Builder::new().suffix(".log").tempfile().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--config")
        .arg(config.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("spawn gateway");
    Serving {
        proc: Proc {
            child,
            addr: predict,
        },
        config,
        log,
    }
}

/// Starts `gateway serve --upgrade` on `gw`'s config file: a new process
/// that waits for the running one to hand over (SIGQUIT it). Not waited
/// for; killed by pid when dropped.
pub fn start_upgrade(gw: &Gateway) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--config")
        .arg(gw.config.path())
        .arg("--upgrade")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn gateway --upgrade");
    Proc {
        child,
        addr: gw.proc.addr,
    }
}

/// Waits until `proc`'s listeners (its predict address and `admin`)
/// answer `GET /readyz` with 200 (false if it exited or 20 s passed).
pub fn wait_until_ready(proc: &mut Proc, admin: SocketAddr) -> bool {
    wait_ready(proc, admin)
}
