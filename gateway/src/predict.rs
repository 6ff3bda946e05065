//! The predict listener's application, straight on pingora-core: each
//! request is one async function over Pingora's server session (HTTP/1.1,
//! or one stream of an HTTP/2 connection) and an HTTP/1.1 client session to
//! the replica. Parse -> authenticate -> resolve -> claim a replica slot (or
//! park until one frees up) -> one write of head and body -> stream the
//! response back as it arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode};
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_error::ErrorType;
use routing::rollout::{self, Side};
use routing::telemetry::RouteMetrics;
use routing::{Admission, Lease, Parked, RolloutState, Routing, SidePreference};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::access_log::AccessLogger;
use crate::conn_limit::{Admitted, ConnLimit};
use crate::connections::Connections;
use crate::http1::{HeadError, RequestHead, ServerConn};
use crate::overload::InFlightCap;
use crate::reject::Reject;
use crate::route::{self, Call};
use crate::shutdown::InFlightGuard;
use client::Client;
use config::ForwardedFor;
use request::{ReplicaPath, RequestBody, client_gone, parked_bytes, session_hash};

mod client;
mod exchange;
mod record;
mod request;
mod response;
mod upstream;

/// Response header naming the deployment that answered.
pub const DEPLOYMENT_HEADER: &str = "x-deployment-id";

/// Request header that keeps a session on one side of a rollout and on one
/// replica of that side.
pub const SESSION_HEADER: &str = "x-session-id";

/// Request header that forces a side of a rollout (`stable` or `canary`);
/// admin-scoped keys only.
pub const SIDE_HEADER: &str = "x-rollout-side";

/// Request header carrying a request's id: taken from the client or
/// generated (for requests the access log records), and passed to the
/// replica.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How many attempts a response took, when a retry made it more than one.
const ATTEMPTS_HEADER: &str = "x-gateway-attempts";

/// Upstream settings applied to every replica connection.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Opening a connection to a replica.
    pub connect_timeout: Duration,
    /// Longest wait for a replica's response head once the request is
    /// sent.
    pub first_byte_timeout: Duration,
    /// Longest silence while reading a replica's response body.
    pub read_timeout: Duration,
    /// Largest request body accepted, unless the deployment sets its own.
    pub max_request_body_bytes: u64,
    /// Longest a request may take, head to last response byte.
    pub request_timeout: Duration,
    /// Response bytes held for a client slower than its replica.
    pub response_buffer_bytes: usize,
    /// What replicas get in `X-Forwarded-For`.
    pub forwarded_for: config::ForwardedFor,
    /// Whether clients see the replica's `x-replica-id`.
    pub expose_replica_id: bool,
}

/// What the predict listener takes from its clients: request head, body
/// and idle limits.
pub use crate::http1::Limits as ClientLimits;

/// What the gateway records of each request.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Count requests in metrics and the recent-window summaries.
    pub request_metrics: bool,
    /// Write access log lines (for the requests it samples).
    pub access_log: Option<Arc<AccessLogger>>,
}

/// The predict service.
#[derive(Debug)]
pub struct Gateway {
    routing: Arc<Routing>,
    upstream: UpstreamSettings,
    connections: Arc<Connections>,
    in_flight: Arc<InFlightCap>,
    request_metrics: bool,
    access_log: Option<Arc<AccessLogger>>,
    options: HttpServerOptions,
    client_limits: ClientLimits,
}

impl Gateway {
    /// A gateway routing by `routing`'s current snapshot, reusing replica
    /// connections from `connections`, holding at most `in_flight`'s cap of
    /// requests.
    pub fn new(
        routing: Arc<Routing>,
        upstream: UpstreamSettings,
        connections: Arc<Connections>,
        in_flight: Arc<InFlightCap>,
        recording: Recording,
        client_limits: ClientLimits,
    ) -> Self {
        let mut options = HttpServerOptions::default();
        // HTTP/2 with prior knowledge on the plain listener; TLS listeners
        // offer h2 by ALPN.
        options.h2c = true;
        Self {
            routing,
            upstream,
            connections,
            in_flight,
            request_metrics: recording.request_metrics,
            access_log: recording.access_log,
            options,
            client_limits,
        }
    }

    /// Answers one request, start to end, and records it; whether the
    /// connection can take another request.
    async fn serve(
        &self,
        client: &mut Client<'_>,
        shutdown: &ShutdownWatch,
        keys: &mut KeyMemo,
    ) -> bool {
        let shutting_down = *shutdown.borrow();
        let path = client.head().path();
        // Health checks pass the cap: an overloaded gateway is alive.
        let in_flight = match path {
            "/healthz" | "/readyz" => Some(self.in_flight.enter_uncapped()),
            _ => self.in_flight.admit(),
        };
        let started = Instant::now();
        let mut ctx = RequestCtx {
            metrics: None,
            request_id: None,
            queue_wait: None,
            upstream_started: None,
            attempts: 1,
            first_byte: None,
            upstream_done: None,
            replica: None,
            client_left: false,
            client_fault: false,
            failure: None,
            failed: false,
            abort: false,
            rollout: None,
            started,
            deadline: started + self.upstream.request_timeout,
            deployment: None,
            replica_path: ReplicaPath::Predict,
            body: RequestBody::default(),
            max_body: self.upstream.max_request_body_bytes,
            in_flight,
        };
        if path == "/healthz" || path == "/readyz" {
            let (status, body) = match (path, shutting_down) {
                ("/healthz", _) => (StatusCode::OK, r#"{"status":"ok"}"#),
                (_, false) => (StatusCode::OK, r#"{"status":"ready"}"#),
                (_, true) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"shutting down"}"#,
                ),
            };
            let body = Bytes::from_static(body.as_bytes());
            return client.respond_json(status, body, &[]).await.is_ok();
        }
        if let Some(log) = &self.access_log
            && log.sample()
        {
            let from_client = client.head().field(REQUEST_ID_HEADER.as_bytes());
            ctx.request_id = Some(log.request_id(from_client));
        }
        let outcome = if ctx.in_flight.is_some() {
            self.route_and_proxy(client, &mut ctx, keys, shutdown).await
        } else {
            Err(Reject::AtCapacity)
        };
        let reuse = match outcome {
            Ok(()) => !ctx.abort,
            Err(Reject::ClientClosed) => {
                // Nobody to answer: counted as 499 unless a response began.
                ctx.client_left = client.status().is_none();
                ctx.client_fault = true;
                false
            }
            Err(reject) => {
                // The gateway's own 4xx: the client's doing, not the replica's.
                ctx.client_fault = reject.status().is_client_error();
                self.refuse(client, reject, ctx.failure.as_deref()).await
            }
        };
        self.record(client, &mut ctx);
        reuse
    }

    /// Admission, the wait for a slot, and the exchange with the replica.
    async fn route_and_proxy(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        keys: &mut KeyMemo,
        shutdown: &ShutdownWatch,
    ) -> Result<(), Reject> {
        let next = self.admit(client.head(), ctx, keys)?;
        client.set_body_limit(ctx.max_body);
        client.set_deadline(ctx.deadline);
        let lease = match next {
            Next::Woken => {
                let body = Bytes::from_static(br#"{"status":"waking"}"#);
                let _ = client.respond_json(StatusCode::ACCEPTED, body, &[]).await;
                return Ok(());
            }
            Next::Slot(slot) => self.take_slot(client, ctx, slot, shutdown).await?,
        };
        self.proxy(client, ctx, lease, shutdown).await
    }

    /// Decides where a request goes, or why it is refused. Synchronous: the
    /// snapshot guard never lives across an await.
    fn admit(
        &self,
        req: &RequestHead,
        ctx: &mut RequestCtx,
        keys: &mut KeyMemo,
    ) -> Result<Next, Reject> {
        let snapshot = self.routing.load();
        let digest = keys.digest(req.field(b"authorization"))?;
        let principal = snapshot.keys().authenticate_digest(&digest)?;

        let route = route::parse(req.host(), req.path())?;
        if !principal.may_call(route.model_id) {
            return Err(routing::AuthError::Forbidden.into());
        }
        if route.call == Call::Predict && *req.method() != Method::POST {
            return Err(Reject::MethodNotAllowed);
        }
        let session = req.field(SESSION_HEADER.as_bytes()).map(session_hash);
        let preference = match req.field(SIDE_HEADER.as_bytes()) {
            Some(value) => {
                if !principal.is_admin() {
                    return Err(Reject::SideNeedsAdmin);
                }
                match value {
                    b"stable" => SidePreference::Pinned(Side::Stable),
                    b"canary" => SidePreference::Pinned(Side::Canary),
                    _ => return Err(Reject::BadSide),
                }
            }
            None => session.map_or(SidePreference::Split, SidePreference::Session),
        };
        let resolved = snapshot.model(route.model_id)?.resolve_request(
            route.target,
            preference,
            rollout::now_ms,
        )?;
        let deployment = resolved.route;
        ctx.metrics = Some(Arc::clone(resolved.metrics));
        ctx.max_body = deployment.max_request_body_bytes(self.upstream.max_request_body_bytes);
        if req.content_length().is_some_and(|n| n > ctx.max_body) {
            return Err(Reject::BodyTooLarge);
        }
        if route.call == Call::Wake {
            if *req.method() != Method::POST {
                return Err(Reject::MethodNotAllowed);
            }
            deployment.pool().wake(1);
            return Ok(Next::Woken);
        }
        ctx.replica_path = ReplicaPath::of(route.call, req.path());
        if matches!(route.call, Call::Sync(_))
            && !deployment.allows_sync(ctx.replica_path.resolve(req.path()))
        {
            return Err(Reject::SyncRouteNotAllowed);
        }
        ctx.deployment = Some(deployment.id_header().clone());
        ctx.rollout = resolved
            .rollout
            .map(|(state, side)| (Arc::clone(state), side));
        let admission = deployment
            .pool()
            .admit_with_affinity(|| parked_bytes(req), session);
        slot(ctx, admission).map(Next::Slot)
    }

    /// Gives back the slot of a replica the request could not reach and
    /// waits in the deployment's queue for another, as a new request would
    /// (see [`routing::pool::Retry::Wait`]); `None` when the retry budget
    /// has no retry left for it.
    async fn requeue(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        lease: Lease,
        shutdown: &ShutdownWatch,
    ) -> Result<Option<Lease>, Reject> {
        let Some(admission) = lease.requeue(parked_bytes(client.head())) else {
            return Ok(None);
        };
        let slot = slot(ctx, admission)?;
        self.take_slot(client, ctx, slot, shutdown).await.map(Some)
    }

    /// The slot's lease: at once, or once the wait in the queue gives one
    /// (the time waited is added to the request's queue wait).
    async fn take_slot(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        slot: Slot,
        shutdown: &ShutdownWatch,
    ) -> Result<Lease, Reject> {
        let mut parked = match slot {
            Slot::Now(lease) => return Ok(lease),
            Slot::Queued(parked) => parked,
        };
        let parked_at = Instant::now();
        let outcome = self.wait_parked(client, ctx, &mut parked, shutdown).await;
        let waited = parked_at.elapsed();
        ctx.queue_wait = Some(ctx.queue_wait.map_or(waited, |before| before + waited));
        outcome
    }

    /// Waits in the deployment's queue for a replica slot, the queue
    /// timeout, or the client leaving, whichever comes first.
    /// At SIGTERM the wait ends in 503 with `Retry-After`: the process is
    /// going away, and the client is better off trying another gateway (in
    /// an upgrade's drain it waits on: the replicas stay).
    async fn wait_parked(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        parked: &mut Parked,
        shutdown: &ShutdownWatch,
    ) -> Result<Lease, Reject> {
        let queue_timeout = Instant::now() + parked.timeout();
        let mut shutdown = shutdown.clone();
        let outcome = tokio::select! {
            lease = parked.lease() => lease.map_err(|_| match parked.failure() {
                Some(why) => {
                    ctx.failure = Some(why);
                    Reject::DeployFailed
                }
                None => Reject::DeploymentWithdrawn,
            }),
            () = tokio::time::sleep_until(queue_timeout.min(ctx.deadline)) => {
                Err(if queue_timeout <= ctx.deadline {
                    Reject::QueueTimeout
                } else {
                    Reject::RequestTimeout
                })
            }
            () = client_gone(client, &mut ctx.body, ctx.max_body) => Err(Reject::ClientClosed),
            () = crate::shutdown::parked_refused(&mut shutdown) => Err(Reject::ShuttingDown),
        };
        let counters = parked.counters();
        let counter = match outcome {
            Err(Reject::QueueTimeout) => Some(&counters.timed_out),
            Err(Reject::ClientClosed) => Some(&counters.client_closed),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Answers a refused or failed request with its JSON error (`detail`
    /// after the reason, when there is one), if no response has begun;
    /// whether the connection can take another request.
    async fn refuse(
        &self,
        client: &mut Client<'_>,
        reject: Reject,
        detail: Option<&String>,
    ) -> bool {
        if client.status().is_some() {
            // A status cannot follow response bytes: the connection is cut.
            return false;
        }
        let reuse = reject.keeps_connection();
        if !reuse {
            client.set_close();
        }
        let message = match detail {
            Some(detail) => format!("{reject}: {detail}"),
            None => reject.to_string(),
        };
        let sent = client
            .respond_error(reject.status(), &message, reject.extra_headers())
            .await;
        reuse && sent.is_ok()
    }
}

/// The digest of the key a keep-alive connection presented last. Clients
/// send the same key on every request of a connection, and hashing it is the
/// costliest step of admission; the key table is still consulted for every
/// request, so a key removed by a reload stops working at once.
#[derive(Debug, Default)]
struct KeyMemo {
    /// The `Authorization` value seen last, once there was one.
    authorization: Option<Vec<u8>>,
    digest: [u8; 32],
}

impl KeyMemo {
    /// The digest of the key in `authorization`, from memory when it is the
    /// value seen last; the memo then holds this one.
    fn digest(&mut self, authorization: Option<&[u8]>) -> Result<[u8; 32], routing::AuthError> {
        if let (Some(seen), Some(value)) = (&self.authorization, authorization)
            && seen.as_slice() == value
        {
            return Ok(self.digest);
        }
        let digest = routing::header_digest(authorization)?;
        if let Some(value) = authorization {
            let seen = self.authorization.get_or_insert_default();
            seen.clear();
            seen.extend_from_slice(value);
            self.digest = digest;
        }
        Ok(digest)
    }
}

/// What `admit` decided.
#[derive(Debug)]
enum Next {
    /// A replica slot, or a place in the queue for one.
    Slot(Slot),
    /// A wake call: answer 202.
    Woken,
}

/// Where a request admitted to a deployment's pool stands.
#[derive(Debug)]
enum Slot {
    /// A slot is leased: proxy now.
    Now(Lease),
    /// Wait in the queue first.
    Queued(Parked),
}

/// The request's slot or place in the queue, or why it has neither.
fn slot(ctx: &mut RequestCtx, admission: Admission) -> Result<Slot, Reject> {
    match admission {
        Admission::Go(lease) => Ok(Slot::Now(lease)),
        Admission::Park(parked) => Ok(Slot::Queued(parked)),
        Admission::Refuse(why) => Err(Reject::Overloaded(why)),
        Admission::Failed(why) => {
            ctx.failure = Some(why);
            Err(Reject::DeployFailed)
        }
    }
}

/// Per-request state.
#[derive(Debug)]
struct RequestCtx {
    /// Where the request is counted, once it resolved to a deployment.
    metrics: Option<Arc<RouteMetrics>>,
    /// Its id, when the access log records it (and whether the gateway
    /// made it up, so it must be passed on).
    request_id: Option<(HeaderValue, bool)>,
    queue_wait: Option<Duration>,
    upstream_started: Option<Instant>,
    /// Attempts made at replicas, the first included (more after retries).
    attempts: u32,
    first_byte: Option<Duration>,
    upstream_done: Option<Instant>,
    /// The replica that answered.
    replica: Option<std::net::SocketAddr>,
    /// The client left before any response: counted as 499.
    client_left: bool,
    /// The gateway refused the request for the client's fault (a 4xx, or
    /// the client left): it says nothing of the replica, so the rollout
    /// guard does not see it (neither its outcome nor its latency).
    client_fault: bool,
    /// Why its deployment cannot start replicas, when that refused it.
    failure: Option<Arc<String>>,
    /// The replica broke off its response.
    failed: bool,
    /// The response could not be completed: the connection is closed
    /// instead of finishing it.
    abort: bool,
    /// The rollout this request counts for, and its side.
    rollout: Option<(Arc<RolloutState>, Side)>,
    started: Instant,
    /// Every wait of the request (its body, the queue, the replica) ends by
    /// then: the request timeout, one deadline threaded through the waits
    /// rather than one more timer around them all.
    deadline: Instant,
    deployment: Option<HeaderValue>,
    replica_path: ReplicaPath,
    body: RequestBody,
    /// Largest body it may have: its deployment's limit once resolved.
    max_body: u64,
    /// Its place under the in-flight cap (the drain counts it too); `None`:
    /// refused at the cap.
    in_flight: Option<InFlightGuard>,
}

impl RequestCtx {
    /// The request id, when the gateway made it up: it is passed on to the
    /// replica and back to the client (one the client sent is theirs).
    fn generated_request_id(&self) -> Option<&HeaderValue> {
        match &self.request_id {
            Some((id, true)) => Some(id),
            _ => None,
        }
    }
}

/// The predict listener's application: HTTP/1.x connections on the
/// gateway's own wire code ([`crate::http1`]); HTTP/2 (ALPN `h2`, or h2c
/// prior knowledge on the plain listener) on Pingora's h2 session, one
/// task per stream.
#[derive(Debug)]
pub struct Listener {
    gateway: Arc<Gateway>,
    conns: Arc<ConnLimit>,
}

impl Listener {
    /// Serves `gateway` to at most `conns`' limit of client connections.
    pub fn new(gateway: Gateway, conns: Arc<ConnLimit>) -> Self {
        Self {
            gateway: Arc::new(gateway),
            conns,
        }
    }
}

/// A client's IP as `X-Forwarded-For` carries it: the address without its
/// port (an IPv4 client on a dual-stack listener as plain IPv4).
fn peer_ip(addr: &pingora_core::protocols::l4::socket::SocketAddr) -> Option<Box<str>> {
    let ip = match addr.as_inet()?.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    Some(ip.to_string().into_boxed_str())
}

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks.
enum Protocol {
    /// HTTP/1.x, with what was read of it deciding.
    H1(Stream, BytesMut),
    /// A start that stalled within the head timeout: answered 408.
    H1Stalled(Stream, BytesMut),
    H2(Stream),
}

/// Tells HTTP/2 from HTTP/1.x: by ALPN under TLS; on the plain listener by
/// the client's first bytes (h2c with prior knowledge starts with the
/// preface). Those bytes are read, not peeked: an HTTP/1 connection keeps
/// them as the start of its first request, an HTTP/2 one gets them back
/// (Pingora's TCP stream can be rewound). A request shorter than the
/// preface is not waited on. The first byte may take the idle timeout; the
/// rest of what could still be a preface, the head timeout (then the
/// client is answered 408, as a stalled HTTP/1 head is). `None`: the client
/// left first.
async fn protocol(mut stream: Stream, limits: &ClientLimits) -> Option<Protocol> {
    if stream.get_ssl_digest().is_some() {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        return Some(if h2 {
            Protocol::H2(stream)
        } else {
            Protocol::H1(stream, BytesMut::new())
        });
    }
    let mut first = BytesMut::with_capacity(4096);
    let mut head_deadline = None;
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
        let deadline = match head_deadline {
            Some(at) => at,
            None if first.is_empty() => Instant::now() + limits.idle_timeout,
            None => *head_deadline.insert(Instant::now() + limits.head_timeout),
        };
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) if !first.is_empty() => return Some(Protocol::H1Stalled(stream, first)),
            _ => return None,
        }
    }
    if !first.starts_with(H2_PREFACE) {
        return Some(Protocol::H1(stream, first));
    }
    let mut tcp = stream
        .into_any()
        .downcast::<pingora_core::protocols::l4::stream::Stream>()
        .ok()?;
    tcp.rewind(&first);
    Some(Protocol::H2(tcp))
}

#[async_trait]
impl ServerApp for Listener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Refused at the cap: every open connection has a request in
        // progress. Dropping the stream closes it.
        let admitted = self.conns.admit()?;
        let limits = self.gateway.client_limits;
        let protocol = tokio::select! {
            protocol = protocol(stream, &limits) => protocol?,
            () = admitted.evicted() => return None,
        };
        match protocol {
            Protocol::H2(stream) => {
                // An HTTP/2 connection multiplexes requests the cap cannot
                // see between: it is never closed to make room.
                admitted.set_busy(true);
                ServerApp::process_new(&self.gateway, stream, shutdown).await
            }
            Protocol::H1Stalled(stream, first) => {
                let mut conn = ServerConn::with_buffer(stream, first, limits);
                refuse_head(&mut conn, HeadError::Timeout).await;
                None
            }
            Protocol::H1(stream, first) => {
                let peer = match self.gateway.upstream.forwarded_for {
                    ForwardedFor::Off => None,
                    _ => stream
                        .get_socket_digest()
                        .and_then(|digest| digest.peer_addr().and_then(peer_ip)),
                };
                let mut conn = ServerConn::with_buffer(stream, first, limits);
                conn.set_peer(peer);
                self.gateway.serve_h1(conn, shutdown, &admitted).await;
                None
            }
        }
    }
}

impl Gateway {
    /// Serves one HTTP/1.x connection, request after request.
    /// The connection is closed when the cap needs its place while it waits
    /// for a request.
    async fn serve_h1(
        &self,
        mut conn: ServerConn<Stream>,
        shutdown: &ShutdownWatch,
        admitted: &Admitted,
    ) {
        let mut keys = KeyMemo::default();
        loop {
            let Some(head) = admitted.while_idle(conn.read_request()).await else {
                return;
            };
            match head {
                Ok(true) => {}
                // The client closed the connection, or let it idle.
                Ok(false) => return,
                Err(e) => return refuse_head(&mut conn, e).await,
            }
            if *shutdown.borrow() || admitted.is_evicted() {
                // Draining, or its place is taken: this connection takes no
                // further request.
                conn.set_close();
            }
            let reuse = self
                .serve(&mut Client::H1(&mut conn), shutdown, &mut keys)
                .await;
            if !reuse {
                // Whatever was answered leaves; a response cut short stays
                // cut (no last chunk): the close tells the client.
                let _ = conn.flush().await;
                return;
            }
            if !matches!(conn.finish().await, Ok(true)) {
                return;
            }
        }
    }
}

/// Answers a request head that could not be read (the connection then
/// closes).
async fn refuse_head(conn: &mut ServerConn<Stream>, e: HeadError) {
    conn.set_close();
    let mut client = Client::H1(conn);
    let _ = client.respond_error(e.status(), &e.to_string(), &[]).await;
    let _ = conn.flush().await;
}

/// HTTP/2 streams, which Pingora's h2 session reads.
#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    let _ = session.respond_error(400).await;
                }
                return None;
            }
        }
        // A stream whose client stops reading (or sending) is ended, as an
        // HTTP/1 connection is.
        session.set_write_timeout(Some(self.client_limits.send_timeout));
        session.set_read_timeout(Some(self.client_limits.body_timeout));
        let head = RequestHead::from_h2(session.req_header());
        let peer = match self.upstream.forwarded_for {
            ForwardedFor::Off => None,
            _ => session.client_addr().and_then(peer_ip),
        };
        let mut client = Client::H2 {
            session: &mut session,
            head,
            peer,
            deadline: None,
        };
        if self
            .serve(&mut client, shutdown, &mut KeyMemo::default())
            .await
        {
            let _ = session.finish().await;
        }
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
