//! The predict listener's HTTP/1 wire behaviour, pinned down with raw bytes
//! on a plain `std::net::TcpStream`: request framing (Content-Length,
//! Transfer-Encoding and their conflicts, RFC 9112 section 6), malformed and
//! over-large heads, pipelining, connection persistence, `Expect:
//! 100-continue`, refusals, HEAD, absolute-form targets and a head that
//! arrives a byte at a time.
//!
//! Each test starts the real gateway binary in front of the recording
//! replica of `support/replica.rs` (on a tokio runtime of its own: the raw
//! client here blocks), and checks what the client got as well as what
//! reached the replica. Every read and write on the client has a timeout, so
//! a gateway that hangs fails the test instead of blocking it.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;

use support::replica::{Behaviour, Received, Replica, find_header};
use support::{Gateway, KEY};

/// The longest wait for any one read or write of the raw client: a response
/// that has not begun by then, or a close that has not come, fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

const PREDICT: &str = "/models/m1/production/predict";
const SYNC_INFO: &str = "/models/m1/production/sync/info";

// ---------------------------------------------------------------------------
// The gateway and its replica
// ---------------------------------------------------------------------------

/// The gateway in front of one recording replica, and the runtime the
/// replica runs on. Fields drop in declaration order: the gateway process is
/// killed first, then the replica's tasks, then the runtime.
struct Setup {
    gw: Gateway,
    replica: Replica,
    rt: tokio::runtime::Runtime,
}

impl Setup {
    fn start(behaviour: Behaviour) -> Self {
        Self::start_with("", behaviour)
    }

    /// With `server` lines added to the gateway's `[server]` table.
    fn start_with(server: &str, behaviour: Behaviour) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the replica");
        let replica = rt.block_on(Replica::start(behaviour));
        let gw = support::gateway_with(server, &replica.config());
        Self { gw, replica, rt }
    }

    /// The replica answers every request with its body.
    fn echo() -> Self {
        Self::start(Behaviour::Echo)
    }

    fn addr(&self) -> SocketAddr {
        self.gw.proc.addr
    }

    /// A new raw connection to the predict listener.
    fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Every data-path request the replica has received, in order.
    fn received(&self) -> Vec<Received> {
        self.rt.block_on(self.replica.received())
    }

    /// The bodies of the requests the replica received, each checked to be
    /// `POST /predict` over HTTP/1.1 without the client's key.
    fn predict_bodies(&self) -> Vec<Vec<u8>> {
        self.rt.block_on(self.replica.assert_predicts_without_key())
    }

    /// Nothing of a refused request reached the replica.
    fn assert_replica_saw_nothing(&self, what: &str) {
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
// The raw client
// ---------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    /// The status line, without its CRLF.
    line: String,
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The status line and body, for failure messages.
    fn describe(&self) -> String {
        format!(
            "{:?} with body {:?}",
            self.line,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A blocking HTTP/1 client connection that writes exact bytes and reads
/// responses one at a time, so several can be read off one connection.
struct Client {
    stream: TcpStream,
    /// Bytes read off the stream and not consumed yet.
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` whole.
    fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
    }

    /// Writes `bytes` whole, or says why not (the gateway may refuse and
    /// close before it read them all).
    fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads what the stream has next into the buffer: how many bytes, 0 at
    /// the end of the stream.
    fn fill(&mut self) -> Result<usize, String> {
        let mut piece = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut piece) {
                Ok(n) => {
                    self.buf.extend_from_slice(&piece[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!("nothing arrived within {IO_TIMEOUT:?}"));
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Consumes the buffer up to and including the first `delimiter`.
    fn take_through(&mut self, delimiter: &[u8], what: &str) -> Result<Vec<u8>, String> {
        let mut searched = 0;
        loop {
            if let Some(at) = self.buf[searched..]
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let end = searched + at + delimiter.len();
                return Ok(self.buf.drain(..end).collect());
            }
            searched = self.buf.len().saturating_sub(delimiter.len() - 1);
            match self.fill() {
                Ok(0) if self.buf.is_empty() => {
                    return Err(format!("the connection closed before {what}"));
                }
                Ok(0) => {
                    return Err(format!(
                        "the connection closed inside {what}, after {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for {what}: {e}")),
            }
        }
    }

    /// Consumes exactly `n` bytes.
    fn take_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "the connection closed inside {what}: {} of {n} bytes",
                        self.buf.len()
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for {what}: {e}")),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Consumes everything up to the end of the stream.
    fn take_to_end(&mut self, what: &str) -> Result<Vec<u8>, String> {
        loop {
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for the end of {what}: {e}")),
            }
        }
    }

    /// A chunked body, decoded; trailers are skipped.
    fn take_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.take_through(b"\r\n", "a chunk size line")?;
            let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?} in a response"))?;
            if size == 0 {
                loop {
                    let trailer = self.take_through(b"\r\n", "the trailers")?;
                    if trailer == b"\r\n" {
                        return Ok(body);
                    }
                }
            }
            body.extend(self.take_exact(size, "a chunk")?);
            if self.take_exact(2, "a chunk's CRLF")? != b"\r\n" {
                return Err("a chunk not followed by CRLF".to_owned());
            }
        }
    }

    /// The next response, interim ones included; its body is read unless it
    /// answers a HEAD (`to_head`) or cannot have one.
    fn try_response(&mut self, to_head: bool) -> Result<Response, String> {
        let head = self.take_through(b"\r\n\r\n", "a response")?;
        let head = String::from_utf8(head)
            .map_err(|e| format!("a response head that is not UTF-8: {e}"))?;
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        let line = lines.next().unwrap_or("").to_owned();
        let status = line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        for field in lines {
            let (name, value) = field
                .split_once(':')
                .ok_or_else(|| format!("bad response header line {field:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let chunked = find_header(&headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if to_head || status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            self.take_chunked()?
        } else if let Some(length) = find_header(&headers, "content-length") {
            let length = length
                .parse()
                .map_err(|_| format!("bad response Content-Length {length:?}"))?;
            self.take_exact(length, "a response body")?
        } else {
            self.take_to_end("a response body delimited by the close")?
        };
        Ok(Response {
            line,
            status,
            headers,
            body,
        })
    }

    /// The next response (not to a HEAD); fails the test naming `what` if
    /// none comes.
    fn response(&mut self, what: &str) -> Response {
        self.try_response(false)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Whether the server closed the connection (a reset counts) with
    /// nothing more sent; otherwise what it did instead.
    fn closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "more bytes followed the response: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        let mut piece = [0u8; 1024];
        loop {
            return match self.stream.read(&mut piece) {
                Ok(0) => Ok(()),
                Ok(n) => Err(format!(
                    "more bytes followed the response: {:?}",
                    String::from_utf8_lossy(&piece[..n])
                )),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                    format!("the connection was still open {IO_TIMEOUT:?} after the response"),
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(format!("read failed: {e}")),
            };
        }
    }

    fn assert_closed(&mut self, what: &str) {
        if let Err(e) = self.closed() {
            panic!("{what}: expected the server to close the connection, but {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Requests and checks
// ---------------------------------------------------------------------------

fn auth() -> String {
    format!("Api-Key {KEY}")
}

/// `POST /models/m1/production/predict HTTP/1.1` with a Host and the key,
/// then `extra` header lines (each ending in CRLF), the blank line, and
/// `body` exactly as given.
fn predict_with(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n{extra}\r\n",
        auth()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A predict with `body` and its Content-Length.
fn predict(body: &[u8]) -> Vec<u8> {
    predict_with(&format!("Content-Length: {}\r\n", body.len()), body)
}

/// A chunked encoding of `pieces`, last chunk included.
fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn assert_status(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: got {}", resp.describe());
}

/// A 200 from the echoing replica: its body is the request's.
fn assert_echoed(resp: &Response, body: &[u8], what: &str) {
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
fn assert_json_error(resp: &Response, status: u16, what: &str) {
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
fn assert_rejected_and_closed(setup: &Setup, request: &[u8], what: &str) {
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
fn rejected_and_closed(setup: &Setup, request: &[u8]) -> Result<(), String> {
    let mut client = setup.connect();
    client.send(request);
    let resp = client.try_response(false)?;
    if resp.status != 400 {
        return Err(format!("answered {}", resp.describe()));
    }
    client.closed().map_err(|e| format!("400, but {e}"))
}

// ---------------------------------------------------------------------------
// Framing: Content-Length and Transfer-Encoding
// ---------------------------------------------------------------------------

/// Two framings in one request are the shape of request smuggling: refused
/// with 400 and the connection closed, as nginx and Envoy do (RFC 9112 6.1
/// would allow reading it as chunked).
#[test]
fn content_length_with_chunked_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with(
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            &chunked(&[b"hello", b" world"]),
        ),
        "Content-Length with Transfer-Encoding: chunked",
    );
}

/// Two keys in one request: which one counts would be a guess.
#[test]
fn two_authorization_headers_are_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with(
            &format!("Authorization: {}\r\nContent-Length: 2\r\n", auth()),
            b"{}",
        ),
        "two Authorization headers",
    );
}

/// The limits in `[server]` are the ones applied.
#[test]
fn configured_head_limits_apply() {
    let setup = Setup::start_with(
        "max_uri_bytes = 300\nmax_request_head_bytes = 2048",
        Behaviour::Echo,
    );
    let mut client = setup.connect();
    let path = format!("{PREDICT}?{}", "q".repeat(300));
    client.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_status(&client.response("a 330-byte URI"), 414, "a 330-byte URI");
    let mut client = setup.connect();
    let big = format!("X-Big: {}\r\n", "b".repeat(2048));
    client.send(&predict_with(&format!("{big}Content-Length: 2\r\n"), b"{}"));
    assert_status(&client.response("a 2 KiB field"), 431, "a 2 KiB field");
    setup.assert_replica_saw_nothing("refused heads");
    // Within the limits, the same gateway answers.
    let mut client = setup.connect();
    client.send(&predict(b"{}"));
    assert_echoed(
        &client.response("a small predict"),
        b"{}",
        "a small predict",
    );
}

/// A request target over `max_uri_bytes` (default 8 KiB) is 414.
#[test]
fn an_over_long_uri_is_refused_with_414() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let path = format!("{PREDICT}?{}", "q".repeat(9 * 1024));
    client.send(format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes());
    let resp = client.response("a 9 KiB URI");
    assert_status(&resp, 414, "a 9 KiB URI");
    setup.assert_replica_saw_nothing("a 9 KiB URI");
}

/// RFC 9110 section 8.6: a list of identical values is that one value.
#[test]
fn a_comma_list_of_identical_content_lengths_is_accepted_as_one() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with("Content-Length: 5, 5\r\n", b"hello"));
    let resp = client.response("Content-Length: 5, 5");
    assert_echoed(&resp, b"hello", "Content-Length: 5, 5");
    assert_eq!(setup.predict_bodies(), [b"hello".to_vec()]);
}

/// RFC 9110 section 8.6: repeated identical fields are that one value.
#[test]
fn repeated_identical_content_length_headers_are_accepted_as_one() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        b"hello",
    ));
    let resp = client.response("two Content-Length: 5");
    assert_echoed(&resp, b"hello", "two Content-Length: 5");
    assert_eq!(setup.predict_bodies(), [b"hello".to_vec()]);
}

/// RFC 9112 section 6.3: differing lengths make the framing invalid: 400,
/// the connection closed, nothing forwarded.
#[test]
fn a_comma_list_of_differing_content_lengths_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("Content-Length: 5, 6\r\n", b"hello"),
        "Content-Length: 5, 6",
    );
}

#[test]
fn repeated_differing_content_length_headers_are_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello"),
        "Content-Length: 5 and Content-Length: 6",
    );
}

/// Content-Length is 1*DIGIT: a sign, a hex prefix or inner space is
/// invalid framing (400, connection closed), not a number to guess at.
#[test]
fn a_non_numeric_content_length_is_rejected_with_400() {
    let setup = Setup::echo();
    let outcomes: Vec<(&str, Result<(), String>)> = ["+5", "-1", "0x5", "5 5"]
        .into_iter()
        .map(|value| {
            let request = predict_with(&format!("Content-Length: {value}\r\n"), b"hello");
            (value, rejected_and_closed(&setup, &request))
        })
        .collect();
    assert!(
        outcomes.iter().all(|(_, o)| o.is_ok()),
        "each value should be a 400 and a close: {outcomes:#?}"
    );
    setup.assert_replica_saw_nothing("non-numeric Content-Length");
}

/// RFC 9112 section 6.3: a Transfer-Encoding whose final coding is not
/// chunked cannot be framed by a server: 400 and close.
#[test]
fn a_transfer_encoding_without_final_chunked_is_rejected_with_400() {
    let setup = Setup::echo();
    let outcomes: Vec<(&str, Result<(), String>)> = [
        ("gzip", Vec::new()),
        ("chunked, gzip", chunked(&[b"hello"])),
    ]
    .into_iter()
    .map(|(coding, body)| {
        let request = predict_with(&format!("Transfer-Encoding: {coding}\r\n"), &body);
        (coding, rejected_and_closed(&setup, &request))
    })
    .collect();
    assert!(
        outcomes.iter().all(|(_, o)| o.is_ok()),
        "each coding should be a 400 and a close: {outcomes:#?}"
    );
    setup.assert_replica_saw_nothing("Transfer-Encoding without final chunked");
}

/// RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 request is
/// faulty framing: 400 and close.
#[test]
fn chunked_on_an_http_1_0_request_is_rejected_with_400() {
    let setup = Setup::echo();
    let mut request = format!(
        "POST {PREDICT} HTTP/1.0\r\nHost: gw\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        auth()
    )
    .into_bytes();
    request.extend(chunked(&[b"hello"]));
    assert_rejected_and_closed(&setup, &request, "HTTP/1.0 with Transfer-Encoding");
}

/// A chunk size line that is not hex is the client's fault: 400 (never a
/// 5xx), the connection closed, and the replica is not held to blame: the
/// next request, on a new connection, goes through.
#[test]
fn a_bad_chunk_size_line_is_a_400_and_the_replica_is_not_blamed() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Transfer-Encoding: chunked\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
    ));
    let resp = client.response("a bad chunk size line");
    assert_status(&resp, 400, "a bad chunk size line");
    client.assert_closed("after a bad chunk size line");

    let mut next = setup.connect();
    next.send(&predict(b"after"));
    let resp = next.response("the next request");
    assert_echoed(&resp, b"after", "the next request, on a new connection");
    assert_eq!(
        setup.predict_bodies(),
        [b"after".to_vec()],
        "only the good request reached the replica"
    );
}

// ---------------------------------------------------------------------------
// Malformed and over-large heads
// ---------------------------------------------------------------------------

/// RFC 9112 section 5.1: no whitespace between a field name and its colon.
#[test]
fn a_space_before_a_header_colon_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost : gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
        auth()
    );
    assert_rejected_and_closed(&setup, request.as_bytes(), "Host : gw");
}

/// RFC 9112 section 5.2: obs-fold outside message/http is rejected.
#[test]
fn an_obs_fold_continuation_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("X-Folded: one\r\n two\r\nContent-Length: 5\r\n", b"hello"),
        "an obs-fold continuation line",
    );
}

#[test]
fn a_nul_in_a_header_value_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("X-Nul: a\0b\r\nContent-Length: 5\r\n", b"hello"),
        "a NUL in a header value",
    );
}

/// 11 bytes, shorter than the 24-byte h2c preface: the listener must judge
/// what it has instead of waiting for more bytes that never come.
#[test]
fn a_garbage_request_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(&setup, b"GARBAGE\r\n\r\n", "GARBAGE");
}

/// The same longer than the h2c preface, so that only the head parser is
/// judged.
#[test]
fn a_long_garbage_request_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        b"GARBAGE GARBAGE GARBAGE GARBAGE\r\n\r\n",
        "a long garbage request line",
    );
}

/// `HTTP/2.0` in a request line is not HTTP/1 (and not the h2c preface).
#[test]
fn an_http_2_0_request_line_on_an_http1_connection_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST {PREDICT} HTTP/2.0\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
        auth()
    );
    assert_rejected_and_closed(&setup, request.as_bytes(), "HTTP/2.0 request line");
}

/// A head far beyond any sane size is refused promptly with a 4xx (400 or
/// 431), whatever else happens: not a hang, not a 5xx.
fn assert_over_large_head_refused(setup: &Setup, request: &[u8], what: &str) {
    let mut client = setup.connect();
    // The gateway may refuse, and close, before it has read it all.
    let sent = client.try_send(request);
    let resp = client
        .try_response(false)
        .unwrap_or_else(|e| panic!("{what}: {e} (sending: {sent:?})"));
    assert!(
        resp.status == 400 || resp.status == 431,
        "{what}: expected 400 or 431, got {}",
        resp.describe()
    );
    setup.assert_replica_saw_nothing(what);
}

#[test]
fn a_200_kb_header_value_is_refused_with_a_4xx() {
    let setup = Setup::echo();
    let big = "a".repeat(200 * 1024);
    assert_over_large_head_refused(
        &setup,
        &predict_with(&format!("X-Big: {big}\r\nContent-Length: 5\r\n"), b"hello"),
        "a 200 KB header value",
    );
}

#[test]
fn three_hundred_header_fields_are_refused_with_a_4xx() {
    let setup = Setup::echo();
    let many: String = (0..300).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    assert_over_large_head_refused(
        &setup,
        &predict_with(&format!("{many}Content-Length: 5\r\n"), b"hello"),
        "300 header fields",
    );
}

// ---------------------------------------------------------------------------
// Pipelining and persistence
// ---------------------------------------------------------------------------

/// RFC 9112 section 9.3.2: pipelined requests are answered in order.
#[test]
fn two_predicts_pipelined_in_one_write_are_both_answered_in_order() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let mut both = predict(b"first");
    both.extend(predict(b"second!"));
    client.send(&both);
    let first = client.response("the first pipelined predict");
    assert_echoed(&first, b"first", "the first pipelined predict");
    let second = client.response("the second pipelined predict");
    assert_echoed(&second, b"second!", "the second pipelined predict");
    assert_eq!(
        setup.predict_bodies(),
        [b"first".to_vec(), b"second!".to_vec()]
    );
}

#[test]
fn a_healthz_pipelined_before_a_predict_is_answered_then_the_predict() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let mut both = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec();
    both.extend(predict(b"after healthz"));
    client.send(&both);
    let health = client.response("the pipelined /healthz");
    assert_status(&health, 200, "the pipelined /healthz");
    assert_eq!(
        String::from_utf8_lossy(&health.body),
        r#"{"status":"ok"}"#,
        "the /healthz body"
    );
    let resp = client.response("the predict pipelined after /healthz");
    assert_echoed(
        &resp,
        b"after healthz",
        "the predict pipelined after /healthz",
    );
    assert_eq!(setup.predict_bodies(), [b"after healthz".to_vec()]);
}

/// `POST` predict over HTTP/1.0 with a Content-Length and `extra` headers.
fn predict_1_0(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {PREDICT} HTTP/1.0\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: {}\r\n{extra}\r\n",
        auth(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// RFC 9112 section 9.3: HTTP/1.0 is not persistent unless asked to be.
#[test]
fn http_1_0_without_a_connection_header_is_closed_after_the_response() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_1_0("", b"one-oh"));
    let resp = client.response("an HTTP/1.0 predict");
    assert_echoed(&resp, b"one-oh", "an HTTP/1.0 predict");
    client.assert_closed("after an HTTP/1.0 request without Connection");
    assert_eq!(setup.predict_bodies(), [b"one-oh".to_vec()]);
}

#[test]
fn http_1_0_with_keep_alive_stays_open_for_a_second_request() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    for body in [&b"first"[..], b"second"] {
        client.send(&predict_1_0("Connection: keep-alive\r\n", body));
        let resp = client.response("an HTTP/1.0 keep-alive predict");
        assert_echoed(&resp, body, "an HTTP/1.0 keep-alive predict");
    }
    assert_eq!(
        setup.predict_bodies(),
        [b"first".to_vec(), b"second".to_vec()]
    );
}

#[test]
fn http_1_1_with_connection_close_is_closed_after_the_response() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Connection: close\r\nContent-Length: 5\r\n",
        b"close",
    ));
    let resp = client.response("a predict with Connection: close");
    assert_echoed(&resp, b"close", "a predict with Connection: close");
    client.assert_closed("after Connection: close");
}

// ---------------------------------------------------------------------------
// Expect, refusals, HEAD, bodies in pieces
// ---------------------------------------------------------------------------

/// The client holds its body until `100 Continue`, then gets the final 200.
#[test]
fn expect_100_continue_gets_100_before_the_body_then_200() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Content-Length: 8\r\nExpect: 100-continue\r\n",
        b"",
    ));
    let interim = client
        .try_response(false)
        .unwrap_or_else(|e| panic!("100 Continue before the body was sent: {e}"));
    assert_status(&interim, 100, "the answer to the head alone");
    assert!(
        interim.line.starts_with("HTTP/1.1 100"),
        "the interim status line {:?}",
        interim.line
    );
    client.send(b"continue");
    let resp = client.response("the final response");
    assert_echoed(&resp, b"continue", "the final response");
    assert_eq!(setup.predict_bodies(), [b"continue".to_vec()]);
}

/// A refusal without a request body leaves the connection usable: the
/// requests that follow on it are answered.
fn assert_bodiless_refusals_keep_the_connection(
    setup: &Setup,
    status: u16,
    requests: [(&str, String); 2],
) {
    let mut client = setup.connect();
    for (what, request) in requests {
        client.send(request.as_bytes());
        let resp = client.response(what);
        assert_json_error(&resp, status, what);
    }
    client.send(&predict(b"still usable"));
    let resp = client.response("a predict after the refusals, on the same connection");
    assert_echoed(
        &resp,
        b"still usable",
        "a predict after the refusals, on the same connection",
    );
    assert_eq!(setup.predict_bodies(), [b"still usable".to_vec()]);
}

#[test]
fn an_unknown_model_is_a_404_json_error_and_a_bodiless_one_keeps_the_connection() {
    let setup = Setup::echo();
    let key = auth();
    assert_bodiless_refusals_keep_the_connection(
        &setup,
        404,
        [
            (
                "GET of an unknown model",
                format!(
                    "GET /models/nope/production/sync/info HTTP/1.1\r\nHost: gw\r\nAuthorization: {key}\r\n\r\n"
                ),
            ),
            (
                "POST with Content-Length: 0 to an unknown model",
                format!(
                    "POST /models/nope/production/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: {key}\r\nContent-Length: 0\r\n\r\n"
                ),
            ),
        ],
    );
}

#[test]
fn a_missing_key_is_a_401_json_error_and_a_bodiless_one_keeps_the_connection() {
    let setup = Setup::echo();
    assert_bodiless_refusals_keep_the_connection(
        &setup,
        401,
        [
            (
                "GET without a key",
                format!("GET {SYNC_INFO} HTTP/1.1\r\nHost: gw\r\n\r\n"),
            ),
            (
                "POST with Content-Length: 0 without a key",
                format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"),
            ),
        ],
    );
}

/// Refusals of requests that carry a body are JSON errors too.
#[test]
fn refusals_of_requests_with_a_body_are_json_errors() {
    let setup = Setup::echo();
    let cases = [
        (
            "POST with a body to an unknown model",
            format!(
                "POST /models/nope/production/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
                auth()
            ),
            404,
        ),
        (
            "POST with a body without a key",
            format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"),
            401,
        ),
    ];
    for (what, request, status) in cases {
        let mut client = setup.connect();
        client.send(request.as_bytes());
        let resp = client.response(what);
        assert_json_error(&resp, status, what);
    }
    setup.assert_replica_saw_nothing("refused requests");
}

/// HEAD on a passthrough path: the replica's status and Content-Length, no
/// body, and the next exchange on the connection is not thrown off.
#[test]
fn head_on_a_sync_path_gets_the_headers_without_a_body() {
    let body = Bytes::from_static(b"replica info: 29 bytes long!\n");
    let setup = Setup::start(Behaviour::Fixed(body.clone()));
    let mut client = setup.connect();
    let request = |method: &str| {
        format!(
            "{method} {SYNC_INFO} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n\r\n",
            auth()
        )
    };
    client.send(request("HEAD").as_bytes());
    let head = client
        .try_response(true)
        .unwrap_or_else(|e| panic!("the HEAD: {e}"));
    assert_status(&head, 200, "the HEAD");
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str()),
        "the replica's Content-Length"
    );
    assert_eq!(head.header("x-deployment-id"), Some("d1"));
    client.send(request("GET").as_bytes());
    let get = client.response("the GET after the HEAD");
    assert_status(&get, 200, "the GET after the HEAD");
    assert_eq!(get.body, body, "the GET's body, right after the HEAD");
    let seen: Vec<(String, String)> = setup
        .received()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    assert_eq!(
        seen,
        [
            ("HEAD".to_owned(), "/info".to_owned()),
            ("GET".to_owned(), "/info".to_owned())
        ]
    );
}

/// A chunked body cut at awkward places (inside a size line, between CR and
/// LF, inside a chunk's data, inside the last chunk) and written piece by
/// piece reaches the replica decoded and whole.
#[test]
fn a_chunked_body_split_over_several_writes_reaches_the_replica_whole() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with("Transfer-Encoding: chunked\r\n", b""));
    let pieces: [&[u8]; 9] = [
        b"1",
        b"0\r",
        b"\nsixteen ",
        b"bytes!!!\r\n",
        b"3;ext=1\r\nabc",
        b"\r\n",
        b"0\r\n",
        b"X-Trailer: t\r\n",
        b"\r\n",
    ];
    for piece in pieces {
        client.send(piece);
    }
    let resp = client.response("the chunked body written in pieces");
    assert_echoed(
        &resp,
        b"sixteen bytes!!!abc",
        "the chunked body written in pieces",
    );
    assert_eq!(setup.predict_bodies(), [b"sixteen bytes!!!abc".to_vec()]);
}

// ---------------------------------------------------------------------------
// Request targets and heads in pieces
// ---------------------------------------------------------------------------

/// An absolute-form target (RFC 9112 section 3.2.2) routes like its path
/// when the Host agrees with its authority.
#[test]
fn an_absolute_form_target_with_a_matching_host_is_routed() {
    let setup = Setup::echo();
    let authority = setup.addr().to_string();
    let request = format!(
        "POST http://{authority}{PREDICT} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\nContent-Length: 8\r\n\r\nabsolute",
        auth()
    );
    let mut client = setup.connect();
    client.send(request.as_bytes());
    let resp = client.response("an absolute-form target");
    assert_echoed(&resp, b"absolute", "an absolute-form target");
    assert_eq!(setup.predict_bodies(), [b"absolute".to_vec()]);
}

/// A Host that differs from the absolute-form authority is ambiguous: 400.
#[test]
fn an_absolute_form_target_with_a_different_host_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST http://{}{PREDICT} HTTP/1.1\r\nHost: other.example\r\nAuthorization: {}\r\nContent-Length: 8\r\n\r\nabsolute",
        setup.addr(),
        auth()
    );
    let mut client = setup.connect();
    client.send(request.as_bytes());
    let resp = client.response("an absolute-form target with another Host");
    assert_status(&resp, 400, "an absolute-form target with another Host");
    setup.assert_replica_saw_nothing("an absolute-form target with another Host");
}

/// The head arrives one byte per write: the parser resumes where it left
/// off each time.
#[test]
fn a_head_written_one_byte_at_a_time_is_answered() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let request = predict(b"bytewise");
    let head_len = request.len() - b"bytewise".len();
    for byte in &request[..head_len] {
        client.send(std::slice::from_ref(byte));
    }
    client.send(&request[head_len..]);
    let resp = client.response("the head written a byte at a time");
    assert_echoed(&resp, b"bytewise", "the head written a byte at a time");
    assert_eq!(setup.predict_bodies(), [b"bytewise".to_vec()]);
}
