//! The client's side of one request, over either protocol: the gateway's
//! own HTTP/1.x connection, or one stream of Pingora's HTTP/2 session. The
//! rest of `predict` reads and answers requests through this alone.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::response::ResponseHead;
use crate::http1::server::BodyReadError;
use crate::http1::{RequestHead, ServerConn};
use crate::reject::Reject;

/// The client connection could not be written to (it left).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the client connection failed")]
pub(super) struct Gone;

/// One request's client.
pub(super) enum Client<'a> {
    H1(&'a mut ServerConn<Stream>),
    H2 {
        session: &'a mut ServerSession,
        head: RequestHead,
        /// The client's IP as text, when the replica is told it.
        peer: Option<Box<str>>,
        /// No read of the body waits past it (the request deadline; the
        /// session's read timeout bounds each read's silence).
        deadline: Option<tokio::time::Instant>,
    },
}

impl Client<'_> {
    /// The request's head.
    pub(super) fn head(&self) -> &RequestHead {
        match self {
            Client::H1(conn) => conn.head(),
            Client::H2 { head, .. } => head,
        }
    }

    /// The next piece of the request body; `None` at its end.
    pub(super) async fn read_body(&mut self) -> Result<Option<Bytes>, Reject> {
        match self {
            Client::H1(conn) => conn.read_body().await.map_err(|e| match e {
                BodyReadError::Framing(_) => Reject::BadBody,
                BodyReadError::Timeout => Reject::BodyTimeout,
                BodyReadError::TooLarge => Reject::BodyTooLarge,
                BodyReadError::Cut | BodyReadError::Io(_) => Reject::ClientClosed,
            }),
            Client::H2 {
                session, deadline, ..
            } => {
                let read = session.read_request_body();
                let read = match deadline {
                    Some(at) => tokio::time::timeout_at(*at, read)
                        .await
                        .map_err(|_| Reject::BodyTimeout)?,
                    None => read.await,
                };
                read.map_err(|_| Reject::BadBody)
            }
        }
    }

    /// The client's IP as text, when the replica is told it.
    pub(super) fn peer(&self) -> Option<&str> {
        match self {
            Client::H1(conn) => conn.peer(),
            Client::H2 { peer, .. } => peer.as_deref(),
        }
    }

    /// The largest body this request may have (enforced as it is read, and
    /// as soon as a chunk announces more).
    pub(super) fn set_body_limit(&mut self, limit: u64) {
        if let Client::H1(conn) = self {
            conn.set_body_limit(limit);
        }
    }

    /// No read of the request's body waits past `deadline` (then 408).
    pub(super) fn set_deadline(&mut self, at: tokio::time::Instant) {
        match self {
            Client::H1(conn) => conn.set_deadline(at),
            Client::H2 { deadline, .. } => *deadline = Some(at),
        }
    }

    /// Resolves when the client goes away (once its body has been read).
    pub(super) async fn closed(&mut self) {
        match self {
            Client::H1(conn) => conn.closed().await,
            Client::H2 { session, .. } => {
                let _ = session.read_body_or_idle(true).await;
            }
        }
    }

    /// Answers `Expect: 100-continue`.
    pub(super) async fn write_continue(&mut self) -> Result<(), Gone> {
        match self {
            Client::H1(conn) => conn.write_continue().await.map_err(|_| Gone),
            Client::H2 { session, .. } => session.write_continue_response().await.map_err(|_| Gone),
        }
    }

    /// Writes the replica's response head, `extra` headers after its own.
    pub(super) async fn write_head(
        &mut self,
        response: &ResponseHead,
        extra: impl Iterator<Item = (&'static str, &HeaderValue)>,
    ) -> Result<(), Gone> {
        match self {
            Client::H1(conn) => {
                let extra = extra.map(|(n, v)| (n.as_bytes(), v.as_bytes()));
                conn.write_head(response.status(), response.fields().chain(extra))
                    .await
                    .map_err(|_| Gone)
            }
            Client::H2 { session, .. } => {
                let mut header = response.to_pingora().ok_or(Gone)?;
                for (name, value) in extra {
                    header
                        .insert_header(name, value.clone())
                        .map_err(|_| Gone)?;
                }
                session
                    .write_response_header(header)
                    .await
                    .map_err(|_| Gone)
            }
        }
    }

    /// Sends what is buffered.
    pub(super) async fn flush(&mut self) -> Result<(), Gone> {
        match self {
            Client::H1(conn) => conn.flush().await.map_err(|_| Gone),
            Client::H2 { .. } => Ok(()),
        }
    }

    /// Relays one piece of the response body as it came.
    pub(super) async fn write_body(&mut self, piece: Bytes) -> Result<(), Gone> {
        match self {
            Client::H1(conn) => conn.write_body(&piece).await.map_err(|_| Gone),
            // An empty piece would end an HTTP/2 stream.
            Client::H2 { .. } if piece.is_empty() => Ok(()),
            Client::H2 { session, .. } => session
                .write_response_body(piece, false)
                .await
                .map_err(|_| Gone),
        }
    }

    /// A whole JSON response: `status`, `extra` headers and `body`.
    pub(super) async fn respond_json(
        &mut self,
        status: StatusCode,
        body: Bytes,
        extra: &[(HeaderName, &'static str)],
    ) -> Result<(), Gone> {
        match self {
            Client::H1(conn) => {
                let mut digits = itoa::Buffer::new();
                let fields = [
                    (&b"content-type"[..], &b"application/json"[..]),
                    (b"content-length", digits.format(body.len()).as_bytes()),
                ];
                let extra = extra
                    .iter()
                    .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
                conn.write_head(status, fields.into_iter().chain(extra))
                    .await
                    .map_err(|_| Gone)?;
                conn.write_body(&body).await.map_err(|_| Gone)
            }
            Client::H2 { session, .. } => {
                let mut header =
                    ResponseHeader::build(status, Some(2 + extra.len())).map_err(|_| Gone)?;
                header
                    .insert_header(http::header::CONTENT_TYPE, "application/json")
                    .map_err(|_| Gone)?;
                header
                    .insert_header(http::header::CONTENT_LENGTH, body.len())
                    .map_err(|_| Gone)?;
                for (name, value) in extra {
                    header
                        .insert_header(name.clone(), *value)
                        .map_err(|_| Gone)?;
                }
                session
                    .write_response_header(Box::new(header))
                    .await
                    .map_err(|_| Gone)?;
                session
                    .write_response_body(body, true)
                    .await
                    .map_err(|_| Gone)
            }
        }
    }

    /// `{"error": message}` with `status` and `extra` headers.
    pub(super) async fn respond_error(
        &mut self,
        status: StatusCode,
        message: &str,
        extra: &[(HeaderName, &'static str)],
    ) -> Result<(), Gone> {
        let body = Bytes::from(serde_json::json!({ "error": message }).to_string());
        self.respond_json(status, body, extra).await
    }

    /// The status of the response begun, if one has.
    pub(super) fn status(&self) -> Option<StatusCode> {
        match self {
            Client::H1(conn) => conn.status(),
            Client::H2 { session, .. } => session.response_written().map(|r| r.status),
        }
    }

    /// Response body bytes sent.
    pub(super) fn body_bytes_sent(&self) -> u64 {
        match self {
            Client::H1(conn) => conn.body_bytes_sent(),
            Client::H2 { session, .. } => session.body_bytes_sent() as u64,
        }
    }

    /// The connection takes no further request.
    pub(super) fn set_close(&mut self) {
        match self {
            Client::H1(conn) => conn.set_close(),
            Client::H2 { session, .. } => session.set_keepalive(None),
        }
    }
}
