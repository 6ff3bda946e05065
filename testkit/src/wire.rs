//! What the HTTP/1 wire tests share: the real gateway in front of a
//! recording replica (on a tokio runtime of its own: the raw client of
//! [`crate::raw`] blocks), and the requests and checks the cases are made
//! of.

use std::net::SocketAddr;

use crate::raw::{Client, Response};
use crate::replica::{Behaviour, Received, Replica};
use crate::{Gateway, KEY};

pub const PREDICT: &str = "/models/m1/production/predict";
pub const SYNC_INFO: &str = "/models/m1/production/sync/v1/info";

// ---------------------------------------------------------------------------
// The gateway and its replica
// ---------------------------------------------------------------------------

/// The gateway in front of one recording replica, and the runtime the
/// replica runs on. Fields drop in declaration order: the gateway process is
/// killed first, then the replica's tasks, then the runtime.
#[derive(Debug)]
pub struct Setup {
    pub gw: Gateway,
    pub replica: Replica,
    pub rt: tokio::runtime::Runtime,
}

impl Setup {
    pub fn start(behaviour: Behaviour) -> Self {
        Self::start_with("", behaviour)
    }

    /// With `server` lines added to the gateway's `[server]` table.
    pub fn start_with(server: &str, behaviour: Behaviour) -> Self {
        Self::start_edited(server, behaviour, |config| config)
    }

    /// Like [`Self::start_with`], the deployment's config
    /// ([`Replica::config`]) edited by `edit`.
    pub fn start_edited(
        server: &str,
        behaviour: Behaviour,
        edit: impl Fn(String) -> String,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the replica");
        let replica = rt.block_on(Replica::start(behaviour));
        let gw = crate::gateway_with(server, &edit(replica.config()));
        Self { gw, replica, rt }
    }

    /// The replica answers every request with its body.
    pub fn echo() -> Self {
        Self::start(Behaviour::Echo)
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw.proc.addr
    }

    /// A new raw connection to the predict listener.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Every data-path request the replica has received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.rt.block_on(self.replica.received())
    }

    /// The bodies of the requests the replica received, each checked to be
    /// `POST /predict` over HTTP/1.1 without the client's key.
    pub fn predict_bodies(&self) -> Vec<Vec<u8>> {
        self.rt.block_on(self.replica.assert_predicts_without_key())
    }

    /// Nothing of a refused request reached the replica.
    pub fn assert_replica_saw_nothing(&self, what: &str) {
        let received = self.received();
        assert!(
            received.is_empty(),
            "{what}: the replica received {:?}",
            received
                .iter()
                .map(|r| (&r.method, &r.target, String::from_utf8_lossy(&r.body)))
                .collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// Requests and checks
// ---------------------------------------------------------------------------

pub fn auth() -> String {
    format!("Api-Key {KEY}")
}

/// `POST /models/m1/production/predict HTTP/1.1` with a Host and the key,
/// then `extra` header lines (each ending in CRLF), the blank line, and
/// `body` exactly as given.
pub fn predict_with(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n{extra}\r\n",
        auth()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A predict with `body` and its Content-Length.
pub fn predict(body: &[u8]) -> Vec<u8> {
    predict_with(&format!("Content-Length: {}\r\n", body.len()), body)
}

/// A chunked encoding of `pieces`, last chunk included.
pub fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

pub fn assert_status(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: got {}", resp.describe());
}

/// A 200 from the echoing replica: its body is the request's.
pub fn assert_echoed(resp: &Response, body: &[u8], what: &str) {
    assert_status(resp, 200, what);
    assert_eq!(
        resp.header("x-deployment-id"),
        Some("d1"),
        "{what}: answered by the deployment"
    );
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        String::from_utf8_lossy(body),
        "{what}: the replica's echo"
    );
}

/// A refusal by the gateway itself: `status`, and a JSON body with an
/// `error` string.
pub fn assert_json_error(resp: &Response, status: u16, what: &str) {
    assert_status(resp, status, what);
    let json: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: a body that is not JSON ({e}): {}", resp.describe()));
    assert!(
        json.get("error")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        "{what}: no \"error\" field in {json}"
    );
}

/// Sends `request` on a new connection and expects a 400, the connection
/// closed after it, and nothing at the replica.
pub fn assert_rejected_and_closed(setup: &Setup, request: &[u8], what: &str) {
    let mut client = setup.connect();
    client.send(request);
    let resp = client.response(what);
    assert_status(&resp, 400, what);
    client.assert_closed(what);
    setup.assert_replica_saw_nothing(what);
}

/// Sends `request` on a new connection: `Ok` if it was answered 400 and the
/// connection then closed, otherwise what the gateway did instead (for tests
/// that try several variants and report them all at once).
pub fn rejected_and_closed(setup: &Setup, request: &[u8]) -> Result<(), String> {
    let mut client = setup.connect();
    client.send(request);
    let resp = client.try_response(false)?;
    if resp.status != 400 {
        return Err(format!("answered {}", resp.describe()));
    }
    client.closed().map_err(|e| format!("400, but {e}"))
}

// ---------------------------------------------------------------------------
// Requests built from a request line (tests/hostile.rs)
// ---------------------------------------------------------------------------

/// `line` (a request line, without its CRLF), a Host and the key, then
/// `extra` header lines (each ending in CRLF), the blank line, and `body`
/// exactly as given.
pub fn keyed_request(line: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    unkeyed_request(line, &format!("Authorization: {}\r\n{extra}", auth()), body)
}

/// `line` (a request line, without its CRLF), a Host, then `extra` header
/// lines (each ending in CRLF), the blank line, and `body` exactly as given.
pub fn unkeyed_request(line: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{line}\r\nHost: gw\r\n{extra}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// `bytes` for a failure message: escaped, cut after `max` bytes (with the
/// full length said).
pub fn escaped(bytes: &[u8], max: usize) -> String {
    let shown = bytes[..bytes.len().min(max)].escape_ascii().to_string();
    if bytes.len() > max {
        format!("{shown}... ({} bytes in all)", bytes.len())
    } else {
        shown
    }
}
