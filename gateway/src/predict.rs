//! The Pingora `ProxyHttp` implementation: parse -> authenticate -> resolve
//! -> claim a replica slot (or park until one frees up) -> proxy, streaming
//! the response as it arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use control::rollout::{self, Side};
use control::{Admission, Lease, Parked, RolloutRuntime, Routing, SidePreference};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use control::telemetry::{Finished, RouteMetrics};
use tokio::time::Instant;

use crate::access_log::{AccessLogger, Entry};
use crate::reject::{Reject, send_json, send_json_error};
use crate::route::{self, Call};
use crate::shutdown::{InFlight, InFlightGuard};
use request::{client_gone, content_length, parked_bytes, session_hash, upstream_uri};

mod request;

/// Response header naming the deployment that answered. A `&'static str`
/// rather than a `HeaderName`: Pingora copies a `HeaderName` into a
/// title-cased buffer on every insert.
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

/// Upstream settings applied to every replica connection.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Opening a connection to a replica.
    pub connect_timeout: Duration,
    /// Longest silence while reading a replica's response.
    pub read_timeout: Duration,
    /// Idle pooled connections are closed after this, before the replica's
    /// own idle timeout can close them under a request.
    pub idle_timeout: Duration,
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
    in_flight: Arc<InFlight>,
    request_metrics: bool,
    access_log: Option<Arc<AccessLogger>>,
}

impl Gateway {
    /// A gateway routing by `routing`'s current snapshot.
    pub fn new(
        routing: Arc<Routing>,
        upstream: UpstreamSettings,
        in_flight: Arc<InFlight>,
        observe: Observe,
    ) -> Self {
        Self {
            routing,
            upstream,
            in_flight,
            request_metrics: observe.request_metrics,
            access_log: observe.access_log,
        }
    }

    /// Decides where a request goes, or why it is refused. Synchronous: the
    /// snapshot guard never lives across an await.
    fn admit(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<Next, Reject> {
        let snapshot = self.routing.load();
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let principal = snapshot.keys().authenticate(authorization)?;

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
        ctx.upstream_uri = Some(upstream_uri(route.call, req.uri.query()).ok_or(Reject::Internal)?);
        ctx.deployment = Some(deployment.id_header().clone());
        ctx.rollout = resolved
            .rollout
            .map(|(runtime, side)| (Arc::clone(runtime), side));
        match deployment
            .pool()
            .admit_with_affinity(|| parked_bytes(req), session)
        {
            Admission::Go(lease) => {
                ctx.lease = Some(lease);
                Ok(Next::Proxy)
            }
            Admission::Park(parked) => Ok(Next::Park(parked)),
            Admission::Refuse(why) => Err(Reject::Overloaded(why)),
        }
    }

    /// Waits in the deployment's queue for a replica slot, the queue
    /// timeout, or the client leaving, whichever comes first.
    async fn wait_parked(
        &self,
        session: &mut Session,
        parked: &mut Parked,
    ) -> Result<Lease, Reject> {
        let timeout = parked.timeout();
        let outcome = tokio::select! {
            lease = parked.lease() => lease.map_err(|_| Reject::Closed),
            () = tokio::time::sleep(timeout) => Err(Reject::QueueTimeout),
            () = client_gone(session, self.upstream.max_request_body_bytes) => Err(Reject::ClientClosed),
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

    fn peer_for(&self, lease: &Lease) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(lease.replica().addr(), false, String::new());
        peer.options.connection_timeout = Some(self.upstream.connect_timeout);
        peer.options.read_timeout = Some(self.upstream.read_timeout);
        peer.options.idle_timeout = Some(self.upstream.idle_timeout);
        Box::new(peer)
    }
}

/// What `admit` decided.
#[derive(Debug)]
enum Next {
    /// A slot is leased: proxy now.
    Proxy,
    /// Wait in the queue first.
    Park(Parked),
    /// A wake call: answer 202.
    Woken,
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    lease: Option<Lease>,
    /// Where the request is counted, once it resolved to a deployment.
    metrics: Option<Arc<RouteMetrics>>,
    /// Its id, when the access log records it (and whether the gateway
    /// made it up, so it must be passed on).
    request_id: Option<(HeaderValue, bool)>,
    queue_wait: Option<Duration>,
    upstream_started: Option<Instant>,
    first_byte: Option<Duration>,
    upstream_done: Option<Instant>,
    /// The replica that answered, once its lease is given back.
    replica: Option<std::net::SocketAddr>,
    /// The client left before any response: counted as 499.
    client_left: bool,
    /// `/healthz` or `/readyz`: not counted as a request.
    health_check: bool,
    /// The rollout this request counts for, and its side.
    rollout: Option<(Arc<RolloutRuntime>, Side)>,
    started: Instant,
    deployment: Option<HeaderValue>,
    upstream_uri: Option<Uri>,
    body_bytes: u64,
    connect_attempts: u32,
    _in_flight: InFlightGuard,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            lease: None,
            metrics: None,
            request_id: None,
            queue_wait: None,
            upstream_started: None,
            first_byte: None,
            upstream_done: None,
            replica: None,
            client_left: false,
            health_check: false,
            rollout: None,
            started: Instant::now(),
            deployment: None,
            upstream_uri: None,
            body_bytes: 0,
            connect_attempts: 0,
            _in_flight: self.in_flight.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let path = session.req_header().uri.path();
        ctx.health_check = path == "/healthz" || path == "/readyz";
        match path {
            "/healthz" => {
                send_json(
                    session,
                    StatusCode::OK,
                    Bytes::from_static(br#"{"status":"ok"}"#),
                    &[],
                )
                .await?;
                return Ok(true);
            }
            "/readyz" => {
                let (status, body) = if session.is_process_shutting_down() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status":"shutting down"}"#,
                    )
                } else {
                    (StatusCode::OK, r#"{"status":"ready"}"#)
                };
                send_json(session, status, Bytes::from_static(body.as_bytes()), &[]).await?;
                return Ok(true);
            }
            _ => {}
        }
        if let Some(log) = &self.access_log
            && log.sample()
        {
            let from_client = session.req_header().headers.get(REQUEST_ID_HEADER);
            ctx.request_id = Some(log.request_id(from_client));
        }
        let outcome = match self.admit(session.req_header(), ctx) {
            Ok(Next::Proxy) => return Ok(false),
            Ok(Next::Woken) => {
                let body = Bytes::from_static(br#"{"status":"waking"}"#);
                send_json(session, StatusCode::ACCEPTED, body, &[]).await?;
                return Ok(true);
            }
            Ok(Next::Park(mut parked)) => {
                let parked_at = Instant::now();
                let outcome = self.wait_parked(session, &mut parked).await;
                ctx.queue_wait = Some(parked_at.elapsed());
                outcome
            }
            Err(reject) => Err(reject),
        };
        let reject = match outcome {
            Ok(lease) => {
                ctx.lease = Some(lease);
                return Ok(false);
            }
            Err(reject) => reject,
        };
        if reject == Reject::ClientClosed {
            ctx.client_left = true;
            // Nobody to answer; the connection is closed with the request.
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "client left while queued (499)",
            );
        }
        let extra: &[(HeaderName, &'static str)] = match reject {
            Reject::Auth(control::AuthError::Missing | control::AuthError::Invalid) => {
                &[(header::WWW_AUTHENTICATE, "Api-Key")]
            }
            Reject::MethodNotAllowed => &[(header::ALLOW, "POST")],
            Reject::QueueTimeout | Reject::Closed => &[(header::RETRY_AFTER, "5")],
            Reject::Overloaded(_) => &[(header::RETRY_AFTER, "1")],
            _ => &[],
        };
        send_json_error(session, reject.status(), &reject.to_string(), extra).await?;
        Ok(true)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > self.upstream.max_request_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let lease = ctx
            .lease
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no replica leased"))?;
        ctx.connect_attempts += 1;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(self.peer_for(lease))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the replica, so trying another one is safe for any
        // method. The failed replica leaves routing until a probe passes; at
        // most three replicas are tried.
        if let Some(lease) = &ctx.lease
            && ctx.connect_attempts < 3
            && let Some(other) = lease.retry_elsewhere()
        {
            ctx.lease = Some(other);
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        // Unlike Pingora's default, a POST may be retried when a pooled
        // connection turns out to be closed before the replica answered:
        // predictions are safe to repeat, and otherwise every idle-timeout
        // race would surface as a 502. Never once the body buffer is gone.
        let mut e = e.more_context(format!("replica {peer}"));
        if session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.clone() {
            upstream_request.set_uri(uri);
        }
        // The replica never sees the client's key.
        upstream_request.remove_header(&header::AUTHORIZATION);
        if let Some((id, true)) = &ctx.request_id {
            upstream_request.insert_header(REQUEST_ID_HEADER, id.clone())?;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            ctx.upstream_done = Some(Instant::now());
            // The replica is done: its slot frees now, before the client
            // has the last byte, so the client's next request finds it free.
            if let Some(lease) = ctx.lease.take() {
                ctx.replica = Some(lease.replica().addr());
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Only replica responses come through here: the head just arrived.
        // (Not in `upstream_response_filter`: another async hook would box
        // one more future per request.)
        ctx.first_byte = Some(ctx.started.elapsed());
        if let Some(id) = ctx.deployment.clone() {
            upstream_response.insert_header(DEPLOYMENT_HEADER, id)?;
        }
        if let Some((id, true)) = &ctx.request_id {
            upstream_response.insert_header(REQUEST_ID_HEADER, id.clone())?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let now = Instant::now();
        let total = now.duration_since(ctx.started);
        let sent = session.response_written().map(|r| r.status.as_u16());
        // Feed the rollout guard: a 5xx or no response at all is a failure.
        if let Some((runtime, side)) = &ctx.rollout {
            let failed = e.is_some() || sent.is_none_or(|s| s >= 500);
            runtime.stats().record(*side, failed, total);
        }
        let finished = Finished {
            at: now,
            status: if ctx.client_left {
                499
            } else {
                sent.unwrap_or(0)
            },
            request_bytes: ctx.body_bytes,
            response_bytes: session.body_bytes_sent() as u64,
            total,
            queue_wait: ctx.queue_wait,
            upstream: ctx
                .upstream_started
                .map(|at| ctx.upstream_done.unwrap_or(now).duration_since(at)),
            first_byte: ctx.first_byte,
        };
        if ctx.health_check {
            return;
        }
        let unrouted;
        let route = match &ctx.metrics {
            Some(route) => route,
            None => {
                unrouted = Arc::clone(self.routing.load().unrouted_metrics());
                &unrouted
            }
        };
        if self.request_metrics {
            route.record(&finished);
        }
        if let (Some(log), Some((request_id, _))) = (&self.access_log, ctx.request_id.take()) {
            log.log(Entry {
                at: std::time::SystemTime::now(),
                request_id,
                route: Arc::clone(route),
                replica: ctx
                    .replica
                    .or(ctx.lease.as_ref().map(|l| l.replica().addr())),
                status: finished.status,
                request_bytes: finished.request_bytes,
                response_bytes: finished.response_bytes,
                total,
                upstream: finished.upstream,
                queue: finished.queue_wait,
            });
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(reject) = Reject::from_proxy_error(e) else {
            // The client went away: 499, unless a response had begun.
            ctx.client_left = session.response_written().is_none();
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = reject.status();
        // Once response bytes reached the client, a new status cannot be sent.
        if session.response_written().is_none()
            && let Err(write_error) =
                send_json_error(session, status, &reject.to_string(), &[]).await
        {
            log::debug!("could not send error response: {write_error}");
        }
        FailToProxy {
            error_code: status.as_u16(),
            can_reuse_downstream: false,
        }
    }
}
