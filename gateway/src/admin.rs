//! The admin listener: health checks, Prometheus metrics (`GET /metrics`,
//! unauthenticated like the health checks: bind this listener to a private
//! address) and the management API ([`control::api::Api`], admin keys only).
//!
//! HTTP/1.x on the gateway's own wire code ([`crate::http1`]), as on the
//! predict listener, so that every error path is the gateway's own:
//! Pingora's HTTP server logs the first 2 KiB of a request it cannot parse
//! at error level, `Authorization` included, and closes without an answer.
//! Here a malformed request gets its 4xx and a close, and the log says only
//! what was wrong, never what was sent. The API's key is checked before a
//! request body is read: a caller without an admin key makes the gateway
//! read (and wait for) nothing past the head.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use control::api::{Api, MAX_BODY_BYTES};
use control::fleet::FleetConfig;
use http::{Request, Response, StatusCode, header};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

use crate::conn_limit::{Admitted, ConnLimit};
use crate::http1::server::BodyReadError;
use crate::http1::{Limits, ServerConn};
use crate::telemetry::Exporter;

/// Client connections the admin listener holds at most: operators, probes
/// and scrapers are few. At the cap the one idle longest makes room, as on
/// the predict listener.
const MAX_CONNECTIONS: usize = 256;

/// Serves the admin listener.
#[derive(Debug)]
pub struct Admin {
    api: Arc<Api>,
    exporter: Exporter,
    conns: Arc<ConnLimit>,
    fleet: Option<Arc<FleetConfig>>,
}

impl Admin {
    /// Health checks, `/metrics` from `exporter`, and `api` under `/v1/`.
    pub fn new(api: Arc<Api>, exporter: Exporter) -> Self {
        Self {
            api,
            exporter,
            conns: ConnLimit::new(MAX_CONNECTIONS),
            fleet: None,
        }
    }

    /// A fleet node's admin listener: `/readyz` says when the node's config
    /// is stale (etcd out of reach; it keeps serving its last config).
    pub fn following(self, fleet: Arc<FleetConfig>) -> Self {
        Self {
            fleet: Some(fleet),
            ..self
        }
    }

    /// Serves one connection, request after request; closed when the cap
    /// needs its place while it waits for a request.
    async fn serve(
        &self,
        mut conn: ServerConn<Stream>,
        shutdown: &ShutdownWatch,
        admitted: &Admitted,
    ) {
        loop {
            let Some(head) = admitted.while_idle(conn.read_request()).await else {
                return;
            };
            match head {
                Ok(true) => {}
                // The client closed the connection, or let it idle.
                Ok(false) => return,
                Err(e) => {
                    // What was wrong, never the bytes: they may hold a key.
                    log::debug!("admin listener: refused a request head: {e}");
                    conn.set_close();
                    let _ = write(&mut conn, error(e.status(), &e.to_string())).await;
                    let _ = conn.flush().await;
                    return;
                }
            }
            let shutting_down = *shutdown.borrow();
            if shutting_down {
                conn.set_close();
            }
            let response = self.answer(&mut conn, shutting_down).await;
            if write(&mut conn, response).await.is_err() {
                return;
            }
            // Closes unless the request was read to its end (a refused
            // body is never read) and the client keeps the connection.
            if !matches!(conn.finish().await, Ok(true)) {
                return;
            }
        }
    }

    async fn answer(
        &self,
        conn: &mut ServerConn<Stream>,
        shutting_down: bool,
    ) -> Response<Vec<u8>> {
        match conn.head().path() {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#),
            "/readyz" if shutting_down => json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"shutting down"}"#,
            ),
            "/readyz" if self.fleet.as_ref().is_some_and(|f| f.is_stale()) => json(
                StatusCode::OK,
                r#"{"status":"ready","config":"stale","detail":"etcd is out of reach: serving the last config and known replicas"}"#,
            ),
            "/readyz" => json(StatusCode::OK, r#"{"status":"ready"}"#),
            "/metrics" => {
                let body = self.exporter.render().into_bytes();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                    .header(header::CONTENT_LENGTH, body.len())
                    .body(body)
                    .expect("static response parts are valid")
            }
            path if path.starts_with("/v1/") || path == "/v1" => self.api_call(conn).await,
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        }
    }

    /// A management API call: the key, then the head, then the body.
    async fn api_call(&self, conn: &mut ServerConn<Stream>) -> Response<Vec<u8>> {
        let head = conn.head();
        if let Some(refusal) = self.api.refusal(head.field(b"authorization")) {
            return refusal;
        }
        let Some(request) = request_of(head) else {
            conn.set_close();
            return error(StatusCode::BAD_REQUEST, "malformed request head");
        };
        match read_body(conn).await {
            Ok(body) => self.api.handle(request.map(|()| body)).await,
            Err(refusal) => refusal,
        }
    }
}

#[async_trait]
impl ServerApp for Admin {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let admitted = self.conns.admit()?;
        let conn = ServerConn::new(stream, Limits::default());
        self.serve(conn, shutdown, &admitted).await;
        None
    }
}

/// The head as an `http` request, without its body yet; `None` if a field
/// is not a valid header (httparse is more lenient than `http`).
fn request_of(head: &crate::http1::RequestHead) -> Option<Request<()>> {
    let target = match head.query() {
        Some(query) => format!("{}?{query}", head.path()),
        None => head.path().to_owned(),
    };
    let mut request = Request::builder().method(head.method().clone()).uri(target);
    for (name, value) in head.fields() {
        request = request.header(name, value);
    }
    request.body(()).ok()
}

/// The whole request body, up to the API's limit (413 beyond it, without
/// reading it when its length says so).
async fn read_body(conn: &mut ServerConn<Stream>) -> Result<Bytes, Response<Vec<u8>>> {
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    if conn
        .head()
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        conn.set_close();
        return Err(too_large());
    }
    if conn.head().expects_continue() && conn.write_continue().await.is_err() {
        conn.set_close();
        return Err(error(StatusCode::BAD_REQUEST, "the connection failed"));
    }
    let mut body = BytesMut::new();
    loop {
        match conn.read_body().await {
            Ok(Some(piece)) if body.len() + piece.len() > MAX_BODY_BYTES => {
                conn.set_close();
                return Err(too_large());
            }
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                conn.set_close();
                let status = match e {
                    BodyReadError::Timeout => StatusCode::REQUEST_TIMEOUT,
                    _ => StatusCode::BAD_REQUEST,
                };
                return Err(error(status, &e.to_string()));
            }
        }
    }
}

/// Writes `response` (its head and its whole body).
async fn write(conn: &mut ServerConn<Stream>, response: Response<Vec<u8>>) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let fields = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    conn.write_head(parts.status, fields).await?;
    conn.write_body(&body).await
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json(status, &serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body.as_bytes().to_vec())
        .expect("static response parts are valid")
}
