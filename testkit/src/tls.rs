//! The client side of the TLS tests (`tls.rs`): certificates made at test
//! time with the `openssl` tool, `curl` as the HTTPS client (each child run
//! in a blocking thread and reaped), and a gateway with a TLS listener in
//! front of a recording replica.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::replica::Replica;
use crate::{Gateway, KEY};

/// The predict URL of the test model.
pub const PREDICT: &str = "/models/m1/production/predict";

// ---------------------------------------------------------------------------
// Certificates and child processes
// ---------------------------------------------------------------------------

/// A child process killed and reaped when dropped (on a failed assertion).
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` to completion in a blocking thread. Every command run
/// here is bounded by its own options (`--max-time`) or by `timeout`.
pub async fn run(mut command: Command) -> Output {
    let what = format!("{command:?}");
    tokio::task::spawn_blocking(move || {
        command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {what}: {e}"))
    })
    .await
    .unwrap()
}

/// Writes a self-signed certificate for 127.0.0.1 with subject `CN=cn`
/// and its unencrypted key.
pub async fn make_pair(cert: &Path, key: &Path, cn: &str) {
    let mut openssl = Command::new("openssl");
    openssl
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert);
    let out = run(openssl).await;
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory holding `cert.pem` and `key.pem` for `CN=gw-test-1`.
#[derive(Debug)]
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub async fn new() -> Self {
        let certs = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        make_pair(&certs.cert(), &certs.key(), "gw-test-1").await;
        certs
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Replaces the pair with a new one for `CN=cn` the way an operator's
    /// tooling does: written beside them, then renamed over them, key first.
    pub async fn replace(&self, cn: &str) {
        let (cert, key) = (
            self.dir.path().join("new-cert.pem"),
            self.dir.path().join("new-key.pem"),
        );
        make_pair(&cert, &key, cn).await;
        std::fs::rename(&key, self.key()).unwrap();
        std::fs::rename(&cert, self.cert()).unwrap();
    }
}

/// The subject of the certificate a new TLS handshake with `addr` presents
/// (`subject=CN = ...`), or what went wrong.
pub async fn presented_subject(addr: SocketAddr) -> Result<String, String> {
    let mut s_client = Command::new("timeout");
    s_client
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "gw.test"]);
    let handshake = run(s_client).await;
    let pem = handshake.stdout;
    let subject = tokio::task::spawn_blocking(move || {
        let mut x509 = Reaped(
            Command::new("openssl")
                .args(["x509", "-noout", "-subject"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn openssl x509"),
        );
        // Its input is small (one handshake's printout): no deadlock.
        let mut stdin = x509.0.stdin.take().unwrap();
        let _ = stdin.write_all(&pem);
        drop(stdin);
        let mut out = String::new();
        x509.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = x509.0.wait().unwrap();
        (status.success(), out)
    })
    .await
    .unwrap();
    match subject {
        (true, out) => Ok(out.trim().to_owned()),
        (false, _) => Err(format!(
            "no certificate from the handshake (s_client {}): {}",
            handshake.status,
            String::from_utf8_lossy(&handshake.stderr)
        )),
    }
}

pub fn subject(cn: &str) -> String {
    format!("subject=CN = {cn}")
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// What curl printed after the body, so that it can be told apart.
pub const MARK: &str = "\n--curl-write-out--";

/// A response as curl reports it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `1.1` or `2`.
    pub version: String,
    /// Response headers, names in lower case (curl's `%{header_json}`).
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.get(0)?.as_str()
    }
}

/// curl with the common options: bounded, no proxy, the test key, and a
/// write-out after the body giving the status, version and headers.
pub fn curl(args: &[&str]) -> Command {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "30", "--connect-timeout", "5"])
        .args(["--noproxy", "*"])
        .args(["-H", &format!("Authorization: Api-Key {KEY}")])
        .args(["-H", "Content-Type: application/octet-stream"])
        .args([
            "-w",
            &format!("{MARK}%{{response_code}} %{{http_version}} %{{header_json}}"),
        ])
        .args(args);
    curl
}

/// Splits curl's output into the response and the write-out.
pub fn answer(out: &Output) -> Answer {
    let stdout = &out.stdout;
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mark = stdout
        .windows(MARK.len())
        .rposition(|w| w == MARK.as_bytes())
        .unwrap_or_else(|| panic!("no write-out in {:?}", String::from_utf8_lossy(stdout)));
    let tail = std::str::from_utf8(&stdout[mark + MARK.len()..]).unwrap();
    let mut fields = tail.splitn(3, ' ');
    let status = fields.next().unwrap().parse().unwrap();
    let version = fields.next().unwrap().to_owned();
    let headers = serde_json::from_str(fields.next().unwrap()).unwrap();
    Answer {
        status,
        version,
        headers,
        body: stdout[..mark].to_vec(),
    }
}

/// POSTs `body` to the predict URL with curl and the extra `args`.
pub async fn post(url: &str, body: &str, args: &[&str]) -> Answer {
    let mut command = curl(args);
    command.args(["--data-binary", body, url]);
    answer(&run(command).await)
}

// ---------------------------------------------------------------------------
// Gateway setup
// ---------------------------------------------------------------------------

/// A gateway whose TLS listener serves the pair in `cert` and `key`, as
/// written in the config (absolute, or relative to the config file).
#[derive(Debug)]
pub struct TlsGateway {
    pub gw: Gateway,
    pub tls: SocketAddr,
}

impl TlsGateway {
    pub async fn start(replica: &Replica, cert: &str, key: &str) -> Self {
        let body = format!(
            r#"
[listeners.tls]
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"

{model}"#,
            model = crate::fixture::static_model("m1", "d1", &[replica.addr], 64),
        );
        let gw = tokio::task::spawn_blocking(move || crate::gateway(&body))
            .await
            .unwrap();
        let tls = gw.tls.expect("the ready line names the TLS listener");
        // The ready line says the socket listens; wait for a complete
        // handshake too, the first proof that the certificate is served.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = presented_subject(tls).await {
            assert!(
                Instant::now() < deadline,
                "the TLS listener on {tls} never completed a handshake: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { gw, tls }
    }

    pub async fn with_certs(replica: &Replica, certs: &Certs) -> Self {
        Self::start(
            replica,
            certs.cert().to_str().unwrap(),
            certs.key().to_str().unwrap(),
        )
        .await
    }

    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.tls)
    }
}

/// Waits (polling new handshakes, at most `limit`) until the TLS listener
/// presents the certificate of `CN=cn`.
pub async fn wait_for_subject(addr: SocketAddr, cn: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        last = presented_subject(addr).await;
        if last.as_deref() == Ok(subject(cn).as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?}, handshakes still present {last:?}, not {cn}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 200 from `POST /models/m1/production/predict` on the TLS listener,
/// verified against `cert`, with the body echoed.
pub async fn assert_echo_over_tls(gw: &TlsGateway, cert: &Path, body: &str) {
    let answer = post(
        &gw.https(PREDICT),
        body,
        &["--http2", "--cacert", cert.to_str().unwrap()],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(String::from_utf8_lossy(&answer.body), body);
}
