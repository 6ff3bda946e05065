//! The recording replica: a tiny HTTP/1.1 upstream on tokio for the tests
//! that need to see what the gateway sent (`data_path.rs`, `tls.rs`).
//!
//! It speaks just enough HTTP/1.1 by hand to answer the way each test needs
//! (close after every response, stream on a signal, ...) and records what
//! reached it (connections, bodies, request heads), so each test can check
//! what the gateway sent as well as what it answered. The minimal framing
//! below (heads, bodies by Content-Length or chunked, lines) is shared with
//! the tests' raw clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound on any one wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The recording replica
// ---------------------------------------------------------------------------

/// How the recording replica answers data-path requests. Health probes
/// (`GET /health/ready`, which the gateway sends every replica) always get a
/// 200 and are neither counted nor recorded.
#[derive(Debug)]
pub enum Behaviour {
    /// 200 with a small JSON summary of the request (method, target, body
    /// length); the connection is kept alive.
    Summary,
    /// Like `Summary`, but the replica closes the connection right after
    /// every response without saying `Connection: close`.
    SummaryThenCloseAtOnce,
    /// Like `Summary`, but the replica closes the connection after every
    /// response without saying `Connection: close`: two at once, then two
    /// a moment later (when the gateway may already have pooled it, or sent
    /// the next request on it, which is then dropped unread).
    SummaryThenClose,
    /// 200 with the request's body echoed back (Content-Length).
    Echo,
    /// 200 with this body whatever the request (Content-Length; HEAD gets
    /// the same headers and no body).
    Fixed(Bytes),
    /// 200, chunked: `first`, then nothing until `go` is notified (at most
    /// [`LIMIT`]), then `rest` and the last chunk.
    StreamAfterSignal {
        first: Bytes,
        rest: Bytes,
        go: Arc<Notify>,
    },
    /// Reads and records the request, then answers nothing (for at most
    /// [`LIMIT`]).
    Silent,
    /// This status with a small JSON body, whatever the request: a replica
    /// whose predictions fail while its readiness probe passes.
    Status(u16),
    /// 503 with `Retry-After: 1`: a replica too busy to take the request.
    Busy,
    /// 200 with `content-length: 1000` and 500 bytes of body, then a close:
    /// a replica that dies mid-response.
    Truncated,
    /// 200 with headers a client must not see: the replica's `Server` and
    /// `x-replica-id`, `Keep-Alive`, `X-Secret`, which its `Connection`
    /// header nominates, and the gateway's own `x-deployment-id` and
    /// `x-gateway-attempts`.
    Leaky,
}

/// One data-path request as the replica received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// The request line's version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What the replica's tasks share with the test.
#[derive(Debug, Default)]
struct Record {
    /// Every TCP connection accepted, health probes included.
    accepted: AtomicUsize,
    /// Connections that carried at least one data-path request.
    data_connections: AtomicUsize,
    /// Requests whose body (Content-Length or chunked) was read whole.
    bodies: AtomicUsize,
    /// Data-path responses written (for `SummaryThenClose`'s alternation).
    responses: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

/// A recording replica on 127.0.0.1:0. Dropping it stops its accept loop
/// and, with it, every connection task (they live in the loop's `JoinSet`).
#[derive(Debug)]
pub struct Replica {
    pub addr: SocketAddr,
    record: Arc<Record>,
    task: JoinHandle<()>,
}

impl Replica {
    /// Gateway config for model `m1` whose production environment serves
    /// deployment `d1`, with this replica as its one static replica. The
    /// concurrency is high enough that no test request waits in the
    /// activation queue.
    pub fn config(&self) -> String {
        crate::fixture::static_model("m1", "d1", &[self.addr], 256)
    }

    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn({
            let record = Arc::clone(&record);
            async move {
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            record.accepted.fetch_add(1, Ordering::SeqCst);
                            let (record, behaviour) = (Arc::clone(&record), Arc::clone(&behaviour));
                            // A connection that ends in an I/O error is the
                            // gateway's business: the tests judge by what
                            // was recorded and answered.
                            connections.spawn(async move {
                                let _ = serve(stream, &record, &behaviour).await;
                            });
                        }
                        // Reap finished connections so the set stays small.
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    }
                }
            }
        });
        Self { addr, record, task }
    }

    /// Connections that carried at least one data-path request.
    pub fn data_connections(&self) -> usize {
        self.record.data_connections.load(Ordering::SeqCst)
    }

    /// Every TCP connection accepted, health probes included.
    pub fn accepted(&self) -> usize {
        self.record.accepted.load(Ordering::SeqCst)
    }

    /// Requests whose body (Content-Length or chunked) was read whole.
    pub fn bodies(&self) -> usize {
        self.record.bodies.load(Ordering::SeqCst)
    }

    /// Every data-path request so far, in the order they were read.
    pub async fn received(&self) -> Vec<Received> {
        self.record.received.lock().await.clone()
    }

    /// The client's key must never reach a replica.
    pub async fn assert_never_saw_authorization(&self) {
        let received = self.received().await;
        assert!(!received.is_empty(), "the replica received requests");
        for r in &received {
            assert!(
                r.header("authorization").is_none(),
                "{} {} carried the client's Authorization header",
                r.method,
                r.target
            );
        }
    }

    /// Every request the replica got was `POST /predict` over HTTP/1.1,
    /// without the client's Authorization header; returns their bodies.
    pub async fn assert_predicts_without_key(&self) -> Vec<Vec<u8>> {
        let received = self.received().await;
        assert!(!received.is_empty(), "the replica received requests");
        for r in &received {
            assert_eq!(
                (r.method.as_str(), r.target.as_str(), r.version.as_str()),
                ("POST", "/predict", "HTTP/1.1"),
                "what the replica received"
            );
            assert!(
                r.header("authorization").is_none(),
                "the client's Authorization header reached the replica: {:?}",
                r.headers
            );
        }
        received.into_iter().map(|r| r.body).collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const HEALTH_PATH: &str = "/health/ready";

/// Serves one connection until the peer closes it or the behaviour does.
async fn serve(stream: TcpStream, record: &Record, behaviour: &Behaviour) -> std::io::Result<()> {
    // Without it, a response written in two pieces waits for the peer's
    // delayed ACK (40 ms) before its second piece goes out.
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    let mut counted = false;
    loop {
        let Some(head) = read_head(&mut conn).await? else {
            return Ok(());
        };
        let (method, target, version) = request_line(&head.line);
        if target == HEALTH_PATH {
            conn.get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
        if !counted {
            record.data_connections.fetch_add(1, Ordering::SeqCst);
            counted = true;
        }
        let framing = Framing::of_request(&head.headers);
        if framing != Framing::None
            && find_header(&head.headers, "expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            conn.get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let body = read_body(&mut conn, framing).await?;
        if framing != Framing::None {
            record.bodies.fetch_add(1, Ordering::SeqCst);
        }
        let received = Received {
            method: method.to_owned(),
            target: target.to_owned(),
            version: version.to_owned(),
            headers: head.headers,
            body,
        };
        // Recorded before answering: once the test has its response, the
        // request is in the record.
        record.received.lock().await.push(received.clone());
        let close = received
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        respond(conn.get_mut(), behaviour, &received).await?;
        let nth = record.responses.fetch_add(1, Ordering::SeqCst);
        if close
            || matches!(
                behaviour,
                Behaviour::SummaryThenCloseAtOnce | Behaviour::Truncated
            )
        {
            return Ok(());
        }
        if matches!(behaviour, Behaviour::SummaryThenClose) {
            // Two responses closed at once, then two a moment later: with
            // tests alternating GET and POST, each method gets both kinds
            // (a period of 2 would close every POST's connection late and
            // every GET's at once, so only GETs would meet a stale one).
            if nth % 4 >= 2 {
                // Close a moment later: the gateway has probably pooled the
                // connection by then and may have written the next request
                // on it, which is dropped unread (the kernel answers RST).
                let _ =
                    tokio::time::timeout(Duration::from_millis(5), conn.get_ref().readable()).await;
            }
            return Ok(());
        }
    }
}

async fn respond(
    out: &mut TcpStream,
    behaviour: &Behaviour,
    req: &Received,
) -> std::io::Result<()> {
    let head_only = req.method == "HEAD";
    let (content_type, body) = match behaviour {
        Behaviour::Summary | Behaviour::SummaryThenClose | Behaviour::SummaryThenCloseAtOnce => (
            "application/json",
            Bytes::from(format!(
                r#"{{"method":"{}","target":"{}","body_len":{}}}"#,
                req.method,
                req.target,
                req.body.len()
            )),
        ),
        Behaviour::Echo => ("application/octet-stream", Bytes::from(req.body.clone())),
        Behaviour::Fixed(body) => ("application/octet-stream", body.clone()),
        Behaviour::Silent => {
            tokio::time::sleep(LIMIT).await;
            return Ok(());
        }
        Behaviour::Status(_) | Behaviour::Busy => {
            let (status, extra) = match behaviour {
                Behaviour::Status(status) => (*status, ""),
                _ => (503, "retry-after: 1\r\n"),
            };
            let body = r#"{"error":"replica failure"}"#;
            let message = format!(
                "HTTP/1.1 {status} Replica\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-replica: r1\r\n{extra}\r\n{body}",
                body.len()
            );
            out.write_all(message.as_bytes()).await?;
            return out.flush().await;
        }
        Behaviour::Truncated => {
            let mut message = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec();
            message.extend_from_slice(&[b'x'; 500]);
            out.write_all(&message).await?;
            return out.flush().await;
        }
        Behaviour::Leaky => {
            out.write_all(
                b"HTTP/1.1 200 OK\r\nserver: replica/1.0\r\nx-replica-id: r1\r\nconnection: x-secret\r\nx-secret: s\r\nkeep-alive: timeout=5\r\nx-deployment-id: spoofed\r\nx-gateway-attempts: 7\r\ncontent-length: 2\r\n\r\nok",
            )
            .await?;
            return out.flush().await;
        }
        Behaviour::StreamAfterSignal { first, rest, go } => {
            out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nx-replica: r1\r\n\r\n",
            )
            .await?;
            write_chunk(out, first).await?;
            out.flush().await?;
            // Bounded: the test signals as soon as the first chunk reached it.
            if tokio::time::timeout(LIMIT, go.notified()).await.is_err() {
                return Ok(());
            }
            write_chunk(out, rest).await?;
            out.write_all(b"0\r\n\r\n").await?;
            return out.flush().await;
        }
    };
    let mut message = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-replica: r1\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        message.extend_from_slice(&body);
    }
    out.write_all(&message).await?;
    out.flush().await
}

/// One chunk of a chunked body (the replica's responses, the raw clients'
/// requests).
pub async fn write_chunk(out: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    out.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    out.write_all(data).await?;
    out.write_all(b"\r\n").await
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 framing, shared by the replica and the raw test clients
// ---------------------------------------------------------------------------

pub type Conn = BufReader<TcpStream>;

const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A request or response head: its first line and its headers, names in
/// lower case.
#[derive(Debug)]
pub struct Head {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

/// The value of header `name` (in lower case), the first if repeated.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A request line's method, target and version (empty when missing).
fn request_line(line: &str) -> (&str, &str, &str) {
    let mut parts = line.split(' ');
    (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    )
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// One CRLF-terminated line, without its CRLF; `None` at end of stream.
pub async fn read_line(conn: &mut Conn) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    let n = (&mut *conn).take(MAX_LINE).read_line(&mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    let Some(line) = line.strip_suffix("\r\n") else {
        return Err(invalid(format!("line not ended by CRLF: {line:?}")));
    };
    Ok(Some(line.to_owned()))
}

/// A head; `None` when the peer closed before sending one.
pub async fn read_head(conn: &mut Conn) -> std::io::Result<Option<Head>> {
    let Some(line) = read_line(conn).await? else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    loop {
        let field = read_line(conn)
            .await?
            .ok_or_else(|| invalid("end of stream inside a head".to_owned()))?;
        if field.is_empty() {
            return Ok(Some(Head { line, headers }));
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many headers".to_owned()));
        }
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {field:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

impl Framing {
    /// What the headers say, if anything: chunked wins over Content-Length.
    pub fn declared(headers: &[(String, String)]) -> Option<Self> {
        if find_header(headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            return Some(Framing::Chunked);
        }
        find_header(headers, "content-length").map(|v| match v.parse::<usize>() {
            Ok(0) => Framing::None,
            Ok(n) => Framing::Length(n),
            Err(_) => Framing::UntilClose,
        })
    }

    /// A request without a declared body has none.
    pub fn of_request(headers: &[(String, String)]) -> Self {
        Self::declared(headers).unwrap_or(Framing::None)
    }
}

/// A body framed by `framing`, at most 64 MiB.
pub async fn read_body(conn: &mut Conn, framing: Framing) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(invalid(format!("body of {n} bytes")));
            }
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        }
        Framing::UntilClose => {
            (&mut *conn)
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await?;
        }
        Framing::Chunked => loop {
            let line = read_line(conn)
                .await?
                .ok_or_else(|| invalid("end of stream inside a chunked body".to_owned()))?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, if any, up to the empty line.
                for _ in 0..=MAX_HEADERS {
                    match read_line(conn).await? {
                        Some(l) if !l.is_empty() => {}
                        _ => return Ok(body),
                    }
                }
                return Err(invalid("too many trailers".to_owned()));
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("chunked body too large".to_owned()));
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf).await?;
            if &crlf != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF".to_owned()));
            }
        },
    }
    Ok(body)
}
