//! The admin listener: health checks, Prometheus metrics (`GET /metrics`,
//! unauthenticated like the health checks: bind this listener to a private
//! address) and the management API ([`control::api::Api`], admin keys only).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use control::api::{Api, MAX_BODY_BYTES};
use http::{Request, Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::telemetry::Exporter;

/// Serves the admin listener.
#[derive(Debug)]
pub struct Admin {
    api: Arc<Api>,
    exporter: Exporter,
}

impl Admin {
    /// Health checks, `/metrics` from `exporter`, and `api` under `/v1/`.
    pub fn new(api: Arc<Api>, exporter: Exporter) -> Self {
        Self { api, exporter }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#),
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
            path if path.starts_with("/v1/") || path == "/v1" => {
                let body = match read_body(session).await {
                    Ok(body) => body,
                    Err(response) => return response,
                };
                let head = session.req_header();
                let mut req = Request::builder()
                    .method(head.method.clone())
                    .uri(head.uri.clone());
                for (name, value) in head.headers.iter() {
                    req = req.header(name, value);
                }
                match req.body(body) {
                    Ok(req) => self.api.handle(req).await,
                    Err(_) => json(StatusCode::BAD_REQUEST, r#"{"error":"malformed request"}"#),
                }
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        }
    }
}

/// The whole request body, up to the API's limit (413 beyond it).
async fn read_body(session: &mut ServerSession) -> Result<Bytes, Response<Vec<u8>>> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        r#"{"error":"request body too large"}"#,
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => {
                return Err(json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"could not read the request body"}"#,
                ));
            }
        }
    }
}

fn json(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body.as_bytes().to_vec())
        .expect("static response parts are valid")
}
