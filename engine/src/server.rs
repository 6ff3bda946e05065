//! The replica's HTTP server (hyper, HTTP/1.1 keep-alive).
//!
//! Hostile or broken clients are bounded: a request head must arrive
//! within `header_read_timeout` (which also closes keep-alive connections
//! idle that long), at most `max_connections` connections are open (more
//! wait in the kernel's listen backlog, see `next_connection`), a failing
//! `accept` (out of file descriptors) pauses instead of spinning, and a
//! predict request with more than `max_inputs` inputs is refused before it
//! waits for a slot ([`request`]).

mod kserve;
mod openai;
pub mod request;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::{Backend, BackendError, Input, Output};
use crate::batching::{self, BatchSettings, Batcher};
use crate::limiter::{Limiter, Slot};
use crate::telemetry;
use config::ReadyLine;
use request::{PredictRequest, RequestError};

type Body = BoxBody<Bytes, Infallible>;

/// How the replica serves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Names this replica in the `x-replica-id` response header.
    pub replica_id: Option<String>,
    /// Largest request body accepted (413 beyond it).
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after a stop signal.
    pub drain: Duration,
    /// Delay between streamed items (`"stream": true`).
    pub stream_interval: Duration,
    /// Predictions run at once (`predict_concurrency`).
    pub predict_concurrency: usize,
    /// Predictions that may wait for a slot; beyond that, busy (503).
    pub queue_size: usize,
    /// Dynamic batching; `None` runs each request on its own, one input
    /// per backend call (`max_batch_size` 1).
    pub batching: Option<BatchSettings>,
    /// Most inputs in one predict request; more get 400 before admission.
    pub max_inputs: usize,
    /// Longest wait for a complete request head, from the connection's
    /// start or the end of its previous response (so also the keep-alive
    /// idle timeout); the connection is closed after it.
    pub header_read_timeout: Duration,
    /// Most connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Renders `GET /metrics`; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// The model's name in the OpenAI and KServe v2 APIs (`/v1/models`,
    /// `/v2/models/{name}`) and in `/info`.
    pub model_name: String,
}

impl ServerSettings {
    /// Default `header_read_timeout`: hyper's own. It must stay above the
    /// gateway's idle time for pooled replica connections (20 s by
    /// default), so that the gateway, not the replica, closes an idle one
    /// and never sends a request on a connection the replica is closing.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_connections`: well above what a gateway keeps open to
    /// one replica (its idle pool plus the requests in flight). Under a
    /// lower file-descriptor limit, `accept` fails with EMFILE first, and
    /// then pauses.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
}

/// The first pause after a failed `accept`; it doubles up to
/// [`ACCEPT_PAUSE_MAX`] while accepting keeps failing. A failure is
/// usually EMFILE (no file descriptors left), which retrying at once only
/// turns into a busy loop; a pause lets connections close meanwhile.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(100);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

struct Replica {
    /// Set once the backend has loaded and passed its warm-up.
    loaded: OnceLock<Loaded>,
    /// `x-replica-id`, parsed once.
    replica_header: Option<http::HeaderValue>,
    limiter: Limiter,
    /// Requests being checked (tokenized against the token caps) at once:
    /// before admission, so an over-cap request never takes a predict slot,
    /// yet bounded, so tokenizer work cannot grow with the number of
    /// clients. One per core.
    checking: tokio::sync::Semaphore,
    settings: ServerSettings,
    ready: AtomicBool,
    /// Wall-clock microseconds since the Unix epoch when it became ready,
    /// so a client can tell its own wait from the replica's start-up.
    ready_at_unix_us: OnceLock<u64>,
    /// What `GET /info` adds about the model (e.g. its reloads).
    info: Arc<dyn Fn() -> Value + Send + Sync>,
}

struct Loaded {
    backend: Arc<dyn Backend>,
    batcher: Option<Batcher>,
}

/// Loads the backend; the replica answers 503 on predict and on
/// `/health/ready` until it has. A load error stops the replica.
pub type Loader = Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, String>> + Send>>;

/// Serves on `listener` until `stop` resolves, then drains and returns.
/// `info` adds fields to `GET /info`.
pub async fn serve(
    listener: TcpListener,
    load: Loader,
    settings: ServerSettings,
    info: Arc<dyn Fn() -> Value + Send + Sync>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let drain = settings.drain;
    let replica_header = match &settings.replica_id {
        Some(id) => Some(id.parse().map_err(|_| {
            std::io::Error::other(format!("replica id {id:?} is not a valid header value"))
        })?),
        None => None,
    };
    let replica = Arc::new(Replica {
        loaded: OnceLock::new(),
        replica_header,
        limiter: Limiter::new(settings.predict_concurrency, settings.queue_size),
        checking: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        ),
        ready: AtomicBool::new(false),
        ready_at_unix_us: OnceLock::new(),
        settings,
        info,
    });
    let mut loading = tokio::spawn(become_ready(Arc::clone(&replica), addr, load));
    let mut load_failed = None;

    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(replica.settings.max_connections.max(1)));
    let http = http1_builder(&replica.settings);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, slot) = tokio::select! {
            accepted = next_connection(&listener, &connections) => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    log::error!("cannot take a connection slot ({e}): stopping");
                    break;
                }
            },
            () = &mut stop => break,
            done = &mut loading, if load_failed.is_none() => {
                match done {
                    Ok(Ok(())) => {
                        load_failed = Some(None);
                        continue;
                    }
                    Ok(Err(e)) => load_failed = Some(Some(e)),
                    Err(e) => load_failed = Some(Some(format!("loading panicked: {e}"))),
                }
                break;
            }
        };
        serve_connection(&replica, &http, &graceful, stream, slot);
    }
    drop(listener);
    replica.ready.store(false, Ordering::Release);
    telemetry::ready(false);
    log::info!("stopping: draining connections for up to {drain:?}");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("drain time over; closing remaining connections");
    }
    match load_failed {
        Some(Some(e)) => Err(std::io::Error::other(e)),
        _ => Ok(()),
    }
}

/// HTTP/1.1 with a header-read timeout. hyper applies the timeout only
/// with a timer; without one a half-sent head holds its connection forever.
fn http1_builder(settings: &ServerSettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
}

/// Takes a connection slot, waiting while `max_connections` connections
/// are open, then accepts the next connection.
///
/// At the cap the replica stops accepting rather than accepting and
/// closing: the kernel completes handshakes into the listen backlog, and
/// each waits there until a connection ends. A gateway that has written a
/// request on such a connection gets its answer late instead of a closed
/// connection, which for a POST it may not retry (502). Stalled
/// connections cannot hold slots forever: the header-read timeout closes
/// them.
async fn next_connection(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> Result<(TcpStream, OwnedSemaphorePermit), AcquireError> {
    let slot = Arc::clone(connections).acquire_owned().await?;
    let mut pause = ACCEPT_PAUSE_FIRST;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return Ok((stream, slot)),
            Err(e) => {
                log::warn!("accept failed: {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
            }
        }
    }
}

/// Serves one connection on a task of its own, which holds its connection
/// slot until the connection ends.
fn serve_connection(
    replica: &Arc<Replica>,
    http: &http1::Builder,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let replica = Arc::clone(replica);
    let service = service_fn(move |req| {
        let replica = Arc::clone(&replica);
        async move { Ok::<_, Infallible>(handle(&replica, req).await) }
    });
    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(e) = conn.await {
            log::debug!("connection ended with error: {e}");
        }
    });
}

async fn become_ready(replica: Arc<Replica>, addr: SocketAddr, load: Loader) -> Result<(), String> {
    let backend = load.await?;
    // Warm-up: one prediction must pass before the replica reports ready.
    backend
        .infer(vec![Input::Text("warm-up".to_owned())])
        .await
        .map_err(|e| format!("warm-up prediction failed: {e}"))?;
    let batcher = replica
        .settings
        .batching
        .map(|b| Batcher::start(Arc::clone(&backend), b));
    let name = backend.name();
    if replica.loaded.set(Loaded { backend, batcher }).is_err() {
        return Err("the backend was loaded twice".into());
    }
    replica.ready.store(true, Ordering::Release);
    telemetry::ready(true);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let _ = replica.ready_at_unix_us.set(now);
    let line = ReadyLine::new(addr, name);
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        log::warn!("could not print the ready line");
    }
    Ok(())
}

async fn handle(replica: &Replica, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let mut response = if path.starts_with("/v1/") {
        openai::handle(replica, req).await
    } else if path.starts_with("/v2") {
        kserve::handle(replica, req).await
    } else {
        match (req.method(), path) {
            (&Method::GET, "/health/live") => {
                json_response(StatusCode::OK, &json!({ "status": "live" }))
            }
            (&Method::GET, "/health/ready") => {
                if replica.is_ready() {
                    json_response(StatusCode::OK, &json!({ "status": "ready" }))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({ "status": "loading" }),
                    )
                }
            }
            (&Method::GET, "/info") => info(replica),
            (&Method::POST, "/predict") => {
                let response = predict(replica, req)
                    .await
                    .unwrap_or_else(|refusal| refusal_response(&refusal));
                telemetry::request(response.status().as_u16());
                response
            }
            (&Method::GET, "/metrics") => metrics(replica),
            (_, "/predict") => error_response(StatusCode::METHOD_NOT_ALLOWED, "predict takes POST"),
            _ => error_response(StatusCode::NOT_FOUND, "not found"),
        }
    };
    if let Some(id) = &replica.replica_header {
        response.headers_mut().insert("x-replica-id", id.clone());
    }
    response
}

impl Replica {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The loaded model, or 503 while it loads.
    fn loaded(&self) -> Result<&Loaded, Refusal> {
        self.loaded.get().ok_or(Refusal::NotLoaded)
    }

    /// Busy, before the body is read, when no running slot and no waiting
    /// place is free: the sender learns at once and has sent nothing the
    /// replica must read (a gateway then tries another replica or waits).
    fn room(&self) -> Result<(), Refusal> {
        self.limiter.has_room().map_err(busy)
    }

    /// Runs `inputs` as every API does: checked (tokenized, against the
    /// token caps) before admission, then a running slot, then the
    /// batcher. The slot is held only while the inputs run.
    async fn run(&self, loaded: &Loaded, inputs: Vec<Input>) -> Result<Vec<Output>, Refusal> {
        let inputs = self.check(loaded, inputs).await?;
        let slot = admit(self).await?;
        let result = match &loaded.batcher {
            Some(batcher) => batcher.infer(inputs).await,
            // No batching means `max_batch_size` 1: one input per call.
            None => batching::infer_in_batches(loaded.backend.as_ref(), inputs, 1).await,
        };
        drop(slot);
        Ok(result?)
    }

    /// Before admission: the token caps (per input and per request), so a
    /// request over them is refused without taking a slot. Tokenizing is
    /// work, bounded by its own permits.
    async fn check(&self, loaded: &Loaded, inputs: Vec<Input>) -> Result<Vec<Input>, Refusal> {
        let _checking = self
            .checking
            .acquire()
            .await
            .map_err(|_| Refusal::ShuttingDown)?;
        Ok(loaded.backend.check(inputs).await?)
    }
}

fn info(replica: &Replica) -> Response<Body> {
    let mut info = json!({
        "replica": replica.settings.replica_id,
        "model_name": replica.settings.model_name,
        "backend": replica.loaded.get().map(|l| l.backend.name()),
        "ready": replica.is_ready(),
        "pid": std::process::id(),
        "ready_at_unix_us": replica.ready_at_unix_us.get(),
        "peak_running": replica.limiter.peak(),
    });
    if let (Value::Object(info), Value::Object(extra)) = (&mut info, (replica.info)()) {
        info.extend(extra);
    }
    json_response(StatusCode::OK, &info)
}

async fn predict(replica: &Replica, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let loaded = replica.loaded()?;
    replica.room()?;
    let body = read_body(req, replica.settings.max_body_bytes).await?;
    // Before admission: a request over `max_inputs` never takes a slot,
    // never reaches the tokenizer and never reaches the model.
    let request = PredictRequest::parse(&body, replica.settings.max_inputs).map_err(|e| {
        if matches!(e, RequestError::TooManyInputs { .. }) {
            telemetry::rejected_too_many_inputs();
        }
        Refusal::BadRequest(e.to_string())
    })?;
    drop(body);
    if request.stream {
        let inputs = replica.check(loaded, request.inputs).await?;
        let slot = admit(replica).await?;
        return Ok(stream(replica, &loaded.backend, inputs, slot));
    }
    let outputs = replica.run(loaded, request.inputs).await?;
    Ok(predict_response(loaded.backend.name(), &outputs))
}

/// Why a request to run inputs was not run, or failed, whatever API it
/// came through; each API renders it in its own error shape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// The model is still loading (503).
    #[error("model is not loaded yet")]
    NotLoaded,
    /// The body is over `max_body_bytes` (413).
    #[error("request body too large")]
    TooLarge,
    /// The body could not be read (400).
    #[error("could not read the request body")]
    Unreadable,
    /// The request is malformed or its inputs cannot run (400).
    #[error("{0}")]
    BadRequest(String),
    /// The running slots and the queue are full (503 with `Retry-After`:
    /// busy, retry; a gateway tries another replica or waits).
    #[error(transparent)]
    Full(#[from] crate::limiter::Full),
    /// The replica is stopping (503).
    #[error("shutting down")]
    ShuttingDown,
    /// The backend failed (500).
    #[error("{0}")]
    Failed(String),
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotLoaded | Self::ShuttingDown | Self::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unreadable | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::BadInput(message) => Self::BadRequest(message),
            e @ BackendError::Failed(_) => Self::Failed(e.to_string()),
        }
    }
}

/// `{"error": "..."}` with the refusal's status (and `Retry-After` when
/// the replica is full, which is what tells a gateway "busy, not broken"):
/// `/predict`'s and KServe v2's error shape.
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<Body> {
    let mut response = error_response(refusal.status(), &refusal.to_string());
    if matches!(refusal, Refusal::Full(_)) {
        mark_busy(&mut response);
    }
    response
}

/// Adds `Retry-After` to a full replica's 503, in every API's shape: with
/// it a 503 says "busy, nothing processed", which a gateway retries and
/// never counts against the replica.
pub(crate) fn mark_busy(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
}

/// The whole body, at most `max_bytes` of it (413 beyond).
pub(crate) async fn read_body(req: Request<Incoming>, max_bytes: usize) -> Result<Bytes, Refusal> {
    // Bounded by `Limited`, so collecting cannot exhaust memory.
    #[allow(clippy::disallowed_methods)]
    let collected = Limited::new(req.into_body(), max_bytes).collect().await;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Err(_) => Err(Refusal::Unreadable),
    }
}

/// A running slot, after waiting in line if needed; busy when the line is
/// full.
async fn admit(replica: &Replica) -> Result<Slot, Refusal> {
    let queued_at = Instant::now();
    match replica.limiter.enter().await {
        Ok(slot) => {
            telemetry::queue_wait(queued_at.elapsed());
            Ok(slot)
        }
        Err(full) => Err(busy(full)),
    }
}

/// The refusal of a full replica, counted: before its body is read
/// ([`Replica::room`]) or once it finds the line full ([`admit`]).
fn busy(full: crate::limiter::Full) -> Refusal {
    telemetry::rejected_queue_full();
    Refusal::Full(full)
}

fn predict_response(backend: &str, outputs: &[Output]) -> Response<Body> {
    match serde_json::to_vec(&PredictResponse { backend, outputs }) {
        Ok(bytes) => bytes_response(StatusCode::OK, Bytes::from(bytes)),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Server-sent events: one event per input, `stream_interval` apart, then
/// `[DONE]`. Each event is produced by its own backend call; the running
/// slot is held until the stream ends.
fn stream(
    replica: &Replica,
    backend: &Arc<dyn Backend>,
    inputs: Vec<Input>,
    slot: Slot,
) -> Response<Body> {
    let backend = Arc::clone(backend);
    let interval = replica.settings.stream_interval;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let _slot = slot;
        for (index, input) in inputs.into_iter().enumerate() {
            tokio::time::sleep(interval).await;
            let event = match telemetry::infer(backend.as_ref(), vec![input]).await {
                Ok(mut outputs) => json!({ "index": index, "output": outputs.pop() }),
                Err(e) => json!({ "index": index, "error": e.to_string() }),
            };
            if tx
                .send(Ok(Frame::data(Bytes::from(format!("data: {event}\n\n")))))
                .await
                .is_err()
            {
                return; // client went away
            }
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
        .expect("static response parts are valid")
}

fn metrics(replica: &Replica) -> Response<Body> {
    let Some(handle) = &replica.settings.metrics else {
        return error_response(StatusCode::NOT_FOUND, "metrics are not enabled");
    };
    // Occupancy is sampled at scrape time: no per-request gauge updates.
    telemetry::occupancy(replica.limiter.running(), replica.limiter.waiting());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(handle.render())).boxed())
        .expect("static response parts are valid")
}

/// `POST /predict`'s answer: one output per input, in order.
#[derive(serde::Serialize)]
struct PredictResponse<'a> {
    backend: &'a str,
    outputs: &'a [Output],
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    bytes_response(status, Bytes::from(value.to_string()))
}

pub(crate) fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body).boxed())
        .expect("static response parts are valid")
}

pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}
