//! The access log: one JSON line per request, written by a thread of its
//! own ([`Writer`], stopped with the control plane: it writes what is
//! queued, flushes and ends). A request hands its [`Entry`] to a bounded
//! channel and moves on;
//! when the writer falls behind the entry is dropped and counted
//! (`igw_access_log_dropped_total`), never waited for. Lines hold ids,
//! numbers and the replica's address: no API key, no body, no path.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use config::{AccessLog, AccessLogMode};
use http::HeaderValue;
use routing::telemetry::{self, RouteMetrics};

/// Entries waiting for the writer; beyond this they are dropped.
const BACKLOG: usize = 16 * 1024;

/// Longest `x-request-id` taken from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Whether a client's `x-request-id` is one the gateway passes on and
/// logs: 1-128 visible ASCII characters. Others are dropped (and replaced
/// by a generated id when the request is logged).
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(u8::is_ascii_graphic)
}

/// What one line says.
#[derive(Debug)]
pub struct Entry {
    /// When the request ended.
    pub at: SystemTime,
    /// The client's `x-request-id`, or the one the gateway made.
    pub request_id: HeaderValue,
    /// Model, environment and deployment labels.
    pub route: Arc<RouteMetrics>,
    /// The replica that answered, if one did.
    pub replica: Option<SocketAddr>,
    /// Status sent (499: the client left first).
    pub status: u16,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// Arrival to the end.
    pub total: Duration,
    /// At the replica.
    pub upstream: Option<Duration>,
    /// Parked in the activation queue.
    pub queue: Option<Duration>,
}

/// What the writer's channel carries.
#[derive(Debug)]
enum Message {
    Line(Entry),
    /// Write what came before, flush, and end.
    Stop,
}

/// The sending side, shared by every request.
#[derive(Debug)]
pub struct AccessLogger {
    mode: AccessLogMode,
    sample_per_million: u32,
    tx: SyncSender<Message>,
    /// Makes generated request ids unique within this process.
    next_id: AtomicU64,
    /// Random per process, so ids differ across gateways and restarts.
    id_prefix: u64,
    dropped: metrics::Counter,
}

impl AccessLogger {
    /// Starts the writer thread for `settings`; `None` when the log is off.
    pub fn start(settings: &AccessLog) -> io::Result<Option<(Arc<Self>, Writer)>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let out: Box<dyn Write + Send> = match &settings.path {
            Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
            None => Box::new(io::stdout()),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(BACKLOG);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&rx, out))?;
        let writer = Writer {
            stop: tx.clone(),
            thread: Some(thread),
        };
        let logger = Arc::new(Self {
            mode: settings.mode,
            sample_per_million: settings.sample_per_million,
            tx,
            next_id: AtomicU64::new(1),
            id_prefix: fastrand::u64(..),
            dropped: metrics::counter!(telemetry::ACCESS_LOG_DROPPED),
        });
        Ok(Some((logger, writer)))
    }

    /// Whether this request gets a line (decided once, when it arrives).
    pub fn sample(&self) -> bool {
        match self.mode {
            AccessLogMode::Off => false,
            AccessLogMode::All => true,
            AccessLogMode::Sampled => fastrand::u32(..1_000_000) < self.sample_per_million,
        }
    }

    /// The request's id: the client's `x-request-id` when it is short and
    /// printable, else a new one (32 hex digits).
    pub fn request_id(&self, from_client: Option<&[u8]>) -> (HeaderValue, bool) {
        if let Some(id) = from_client
            .filter(|v| is_valid_request_id(v))
            .and_then(|v| HeaderValue::from_bytes(v).ok())
        {
            return (id, false);
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}{n:016x}", self.id_prefix);
        (
            HeaderValue::from_str(&id).expect("hex digits are a valid header value"),
            true,
        )
    }

    /// Hands `entry` to the writer, or drops it if the writer is behind.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(Message::Line(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.increment(1);
            }
        }
    }
}

/// The writer thread. Dropping it stops the writer after the lines queued
/// before, and waits until they are written and flushed.
#[derive(Debug)]
pub struct Writer {
    stop: SyncSender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Blocks while the queue is full: the writer is draining it.
        if self.stop.send(Message::Stop).is_err() {
            return; // the writer is gone already
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the access log writer panicked");
        }
    }
}

/// The writer: formats and writes entries as they come, flushing whenever
/// it has caught up, until told to stop.
fn write_lines(rx: &Receiver<Message>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let lines = metrics::counter!(telemetry::ACCESS_LOG_LINES);
    let mut line = Vec::with_capacity(512);
    let mut stopping = false;
    while !stopping && let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            let Message::Line(entry) = message else {
                stopping = true;
                break;
            };
            line.clear();
            format_line(&mut line, &entry);
            if let Err(e) = out.write_all(&line) {
                log::warn!("access log: {e}");
            }
            lines.increment(1);
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            log::warn!("access log: {e}");
        }
    }
}

/// One JSON object and a newline.
fn format_line(buf: &mut Vec<u8>, e: &Entry) {
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let line = serde_json::json!({
        "time": jiff::Timestamp::try_from(e.at).map(|t| t.to_string()).unwrap_or_default(),
        "request_id": String::from_utf8_lossy(e.request_id.as_bytes()),
        "model": e.route.model(),
        "environment": e.route.environment(),
        "deployment": e.route.deployment(),
        "replica": e.replica.map(|a| a.to_string()),
        "status": e.status,
        "request_bytes": e.request_bytes,
        "response_bytes": e.response_bytes,
        "total_ms": ms(e.total),
        "upstream_ms": e.upstream.map(ms),
        "queue_ms": e.queue.map(ms),
    });
    let _ = serde_json::to_writer(&mut *buf, &line);
    buf.push(b'\n');
}
