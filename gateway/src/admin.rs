//! The admin listener. Today it serves health checks; the management API
//! and metrics mount here.

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

/// Health endpoints of the admin listener.
#[derive(Debug, Default)]
pub struct Admin;

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, body) = match session.req_header().uri.path() {
            "/healthz" => (StatusCode::OK, r#"{"status":"ok"}"#),
            "/readyz" => (StatusCode::OK, r#"{"status":"ready"}"#),
            _ => (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(body.as_bytes().to_vec())
            .expect("static response parts are valid")
    }
}
