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
use bytes::Bytes;
use control::rollout::{self, Side};
use control::telemetry::RouteMetrics;
use control::{Admission, Lease, Parked, RolloutRuntime, Routing, SidePreference};
use http::{HeaderValue, Method, StatusCode, header};
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream,
};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use tokio::time::Instant;

use crate::access_log::AccessLogger;
use crate::connections::Connections;
use crate::reject::{Reject, send_json, send_json_error};
use crate::route::{self, Call};
use crate::shutdown::{InFlight, InFlightGuard};
use request::{ReplicaPath, RequestBody, client_gone, content_length, parked_bytes, session_hash};

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

/// Replicas tried for one request when they cannot be reached.
const CONNECT_ATTEMPTS: u32 = 3;

/// Upstream settings applied to every replica connection.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Opening a connection to a replica.
    pub connect_timeout: Duration,
    /// Longest silence while reading a replica's response.
    pub read_timeout: Duration,
    /// Largest request body accepted.
    pub max_request_body_bytes: u64,
}

/// What the gateway records of each request.
#[derive(Debug, Clone, Default)]
pub struct Observe {
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
    in_flight: Arc<InFlight>,
    request_metrics: bool,
    access_log: Option<Arc<AccessLogger>>,
    options: HttpServerOptions,
}

impl Gateway {
    /// A gateway routing by `routing`'s current snapshot, reusing replica
    /// connections from `connections`.
    pub fn new(
        routing: Arc<Routing>,
        upstream: UpstreamSettings,
        connections: Arc<Connections>,
        in_flight: Arc<InFlight>,
        observe: Observe,
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
            request_metrics: observe.request_metrics,
            access_log: observe.access_log,
            options,
        }
    }

    /// Answers one request, start to end, and records it; whether the
    /// connection can take another request.
    async fn serve(
        &self,
        session: &mut ServerSession,
        shutting_down: bool,
        keys: &mut Option<Box<KeyMemo>>,
    ) -> bool {
        let mut ctx = RequestCtx {
            metrics: None,
            request_id: None,
            queue_wait: None,
            upstream_started: None,
            first_byte: None,
            upstream_done: None,
            replica: None,
            client_left: false,
            failed: false,
            abort: false,
            rollout: None,
            started: Instant::now(),
            deployment: None,
            replica_path: ReplicaPath::Predict,
            body: RequestBody::default(),
            _in_flight: self.in_flight.enter(),
        };
        let path = session.req_header().uri.path();
        if path == "/healthz" || path == "/readyz" {
            let (status, body) = match (path, shutting_down) {
                ("/healthz", _) => (StatusCode::OK, r#"{"status":"ok"}"#),
                (_, false) => (StatusCode::OK, r#"{"status":"ready"}"#),
                (_, true) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"shutting down"}"#,
                ),
            };
            let sent = send_json(session, status, Bytes::from_static(body.as_bytes()), &[]).await;
            return sent.is_ok();
        }
        if let Some(log) = &self.access_log
            && log.sample()
        {
            let from_client = session.req_header().headers.get(REQUEST_ID_HEADER);
            ctx.request_id = Some(log.request_id(from_client));
        }
        let reuse = match self.route_and_proxy(session, &mut ctx, keys).await {
            Ok(()) => !ctx.abort,
            Err(Reject::ClientClosed) => {
                // Nobody to answer: counted as 499 unless a response began.
                ctx.client_left = session.response_written().is_none();
                false
            }
            Err(reject) => self.refuse(session, reject).await,
        };
        self.record(session, &mut ctx);
        reuse
    }

    /// Admission, the wait for a slot, and the exchange with the replica.
    async fn route_and_proxy(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        keys: &mut Option<Box<KeyMemo>>,
    ) -> Result<(), Reject> {
        let lease = match self.admit(session.req_header(), ctx, keys)? {
            Next::Proxy(lease) => lease,
            Next::Woken => {
                let body = Bytes::from_static(br#"{"status":"waking"}"#);
                let _ = send_json(session, StatusCode::ACCEPTED, body, &[]).await;
                return Ok(());
            }
            Next::Park(mut parked) => {
                let parked_at = Instant::now();
                let outcome = self.wait_parked(session, &mut ctx.body, &mut parked).await;
                ctx.queue_wait = Some(parked_at.elapsed());
                outcome?
            }
        };
        self.proxy(session, ctx, lease).await
    }

    /// Decides where a request goes, or why it is refused. Synchronous: the
    /// snapshot guard never lives across an await.
    fn admit(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        keys: &mut Option<Box<KeyMemo>>,
    ) -> Result<Next, Reject> {
        let snapshot = self.routing.load();
        let digest = KeyMemo::digest(keys, req.headers.get(header::AUTHORIZATION))?;
        let principal = snapshot.keys().authenticate_digest(&digest)?;

        let host = req
            .uri
            .host()
            .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let route = route::parse(host, req.uri.path())?;
        if !principal.may_call(route.model_id) {
            return Err(control::AuthError::Forbidden.into());
        }
        if route.call == Call::Predict && req.method != Method::POST {
            return Err(Reject::MethodNotAllowed);
        }
        let session = req
            .headers
            .get(SESSION_HEADER)
            .map(|v| session_hash(v.as_bytes()));
        let preference = match req.headers.get(SIDE_HEADER) {
            Some(value) => {
                if !principal.is_admin() {
                    return Err(Reject::SideNeedsAdmin);
                }
                match value.as_bytes() {
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
        if content_length(req).is_some_and(|n| n > self.upstream.max_request_body_bytes) {
            return Err(Reject::BodyTooLarge);
        }
        if route.call == Call::Wake {
            if req.method != Method::POST {
                return Err(Reject::MethodNotAllowed);
            }
            deployment.pool().wake(1);
            return Ok(Next::Woken);
        }
        ctx.replica_path = ReplicaPath::of(route.call, req.uri.path());
        ctx.deployment = Some(deployment.id_header().clone());
        ctx.rollout = resolved
            .rollout
            .map(|(runtime, side)| (Arc::clone(runtime), side));
        match deployment
            .pool()
            .admit_with_affinity(|| parked_bytes(req), session)
        {
            Admission::Go(lease) => Ok(Next::Proxy(lease)),
            Admission::Park(parked) => Ok(Next::Park(parked)),
            Admission::Refuse(why) => Err(Reject::Overloaded(why)),
        }
    }

    /// Waits in the deployment's queue for a replica slot, the queue
    /// timeout, or the client leaving, whichever comes first.
    async fn wait_parked(
        &self,
        session: &mut ServerSession,
        body: &mut RequestBody,
        parked: &mut Parked,
    ) -> Result<Lease, Reject> {
        let timeout = parked.timeout();
        let max = self.upstream.max_request_body_bytes;
        let outcome = tokio::select! {
            lease = parked.lease() => lease.map_err(|_| Reject::Closed),
            () = tokio::time::sleep(timeout) => Err(Reject::QueueTimeout),
            () = client_gone(session, body, max) => Err(Reject::ClientClosed),
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

    /// Answers a refused or failed request with its JSON error, if no
    /// response has begun; whether the connection can take another request.
    async fn refuse(&self, session: &mut ServerSession, reject: Reject) -> bool {
        if session.response_written().is_some() {
            // A status cannot follow response bytes: the connection is cut.
            return false;
        }
        let reuse = reject.keeps_connection();
        if !reuse {
            session.set_keepalive(None);
        }
        let sent = send_json_error(
            session,
            reject.status(),
            &reject.to_string(),
            reject.extra_headers(),
        )
        .await;
        reuse && sent.is_ok()
    }
}

/// The digest of the key a keep-alive connection presented last. Clients
/// send the same key on every request of a connection, and hashing it is the
/// costliest step of admission; the key table is still consulted for every
/// request, so a key removed by a reload stops working at once.
#[derive(Debug)]
struct KeyMemo {
    authorization: HeaderValue,
    digest: [u8; 32],
}

impl KeyMemo {
    /// The digest of the key in `authorization`, from `memo` when it is the
    /// header seen last; `memo` then holds this one.
    fn digest(
        memo: &mut Option<Box<KeyMemo>>,
        authorization: Option<&HeaderValue>,
    ) -> Result<[u8; 32], control::AuthError> {
        if let (Some(seen), Some(value)) = (memo.as_deref(), authorization)
            && seen.authorization == value
        {
            return Ok(seen.digest);
        }
        let digest = control::header_digest(authorization.map(HeaderValue::as_bytes))?;
        if let Some(value) = authorization {
            let authorization = value.clone();
            match memo {
                Some(seen) => {
                    **seen = KeyMemo {
                        authorization,
                        digest,
                    }
                }
                None => {
                    *memo = Some(Box::new(KeyMemo {
                        authorization,
                        digest,
                    }))
                }
            }
        }
        Ok(digest)
    }
}

/// What `admit` decided.
#[derive(Debug)]
enum Next {
    /// A slot is leased: proxy now.
    Proxy(Lease),
    /// Wait in the queue first.
    Park(Parked),
    /// A wake call: answer 202.
    Woken,
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
    first_byte: Option<Duration>,
    upstream_done: Option<Instant>,
    /// The replica that answered.
    replica: Option<std::net::SocketAddr>,
    /// The client left before any response: counted as 499.
    client_left: bool,
    /// The replica broke off its response.
    failed: bool,
    /// The response could not be completed: the connection is closed
    /// instead of finishing it.
    abort: bool,
    /// The rollout this request counts for, and its side.
    rollout: Option<(Arc<RolloutRuntime>, Side)>,
    started: Instant,
    deployment: Option<HeaderValue>,
    replica_path: ReplicaPath,
    body: RequestBody,
    _in_flight: InFlightGuard,
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client closed an idle keep-alive connection.
            Ok(false) => return None,
            Err(e) => {
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    let _ = session.respond_error(400).await;
                }
                return None;
            }
        }
        let shutting_down = *shutdown.borrow();
        if shutting_down {
            // Draining: this connection takes no further request.
            session.set_keepalive(None);
        }
        let mut keys = session
            .take_connection_user_context()
            .and_then(|memo| memo.downcast::<KeyMemo>().ok());
        if !self.serve(&mut session, shutting_down, &mut keys).await {
            return None;
        }
        let mut persistent = HttpPersistentSettings::for_session(&session);
        if let Some(memo) = keys {
            // The same box goes on to the connection's next request.
            persistent.set_user_context(memo);
        }
        match session.finish().await {
            Ok(Some(reusable)) => {
                Some(ReusedHttpStream::from_reusable_stream(reusable, persistent))
            }
            _ => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
