//! The replica side of one exchange: the request head the gateway writes
//! itself (straight from the client's header, no header-map clone), the
//! write of head and body, and the framing rules of what is forwarded.

use std::io::{self, IoSlice};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, header};
use pingora_http::RequestHeader;
use tokio::io::AsyncWriteExt;

use pingora_core::protocols::Stream;

/// How the request body is framed towards the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body and no framing header (a GET, say).
    None,
    /// `Content-Length: n` (0 for no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the body's length is not known yet.
    Chunked,
}

/// The request line and headers the replica gets: the client's method, the
/// replica path (`/predict` or the passthrough route) with the client's
/// query, the client's end-to-end headers, the gateway's framing, and the
/// request id when the gateway made it up. Never the client's key, nor any
/// hop-by-hop header or one the client's `Connection` header nominates.
pub(super) fn write_head(
    out: &mut BytesMut,
    req: &RequestHeader,
    path: &str,
    query: Option<&str>,
    framing: Framing,
    request_id: Option<&HeaderValue>,
) {
    out.put_slice(req.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    if let Some(query) = query {
        out.put_u8(b'?');
        out.put_slice(query.as_bytes());
    }
    out.put_slice(b" HTTP/1.1\r\n");
    let nominated = req.headers.get(header::CONNECTION);
    if req.headers.get(header::HOST).is_none()
        && let Some(authority) = req.uri.authority()
    {
        // HTTP/2 clients name the host in `:authority`; HTTP/1.1 needs `Host`.
        put_header(
            out,
            header::HOST.as_str().as_bytes(),
            authority.as_str().as_bytes(),
        );
    }
    for (name, value) in &req.headers {
        if is_dropped_request_header(name) || nominated.is_some_and(|c| names(c, name)) {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(id) = request_id {
        put_header(out, super::REQUEST_ID_HEADER.as_bytes(), id.as_bytes());
    }
    match framing {
        Framing::Length(n) => {
            out.put_slice(b"content-length: ");
            let mut digits = itoa::Buffer::new();
            out.put_slice(digits.format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Request headers that are the gateway's to write or that stop here: the
/// client's key, hop-by-hop headers and the framing headers, which the
/// gateway sets from the body it forwards. `Expect` is answered by the
/// gateway itself.
fn is_dropped_request_header(name: &HeaderName) -> bool {
    is_hop_by_hop(name)
        || name == header::AUTHORIZATION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::EXPECT
        || name == header::PROXY_AUTHORIZATION
}

/// Hop-by-hop headers (RFC 9110 7.6.1), which stop at the gateway in both
/// directions. `Transfer-Encoding` is one too; each side deals with it as
/// part of its framing.
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The options of a `Connection` header value: `close`, `keep-alive`, or
/// the names of more headers that stop here.
pub(super) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Whether the `Connection` header value lists `name` as a token.
fn names(connection: &HeaderValue, name: &HeaderName) -> bool {
    connection_tokens(connection.as_bytes())
        .any(|token| token.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// Writes `head` and `body` as one vectored write (one `writev` when the
/// socket takes it all, as it does for a predict request).
pub(super) async fn write_all_vectored(
    stream: &mut Stream,
    head: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            body = &body[n - head.len()..];
            head = &[];
        }
    }
    if !body.is_empty() {
        stream.write_all(body).await?;
    }
    stream.flush().await
}

/// Writes one piece of a streamed body in its framing.
pub(super) async fn write_body_piece(
    stream: &mut Stream,
    framing: Framing,
    piece: &Bytes,
) -> io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    match framing {
        Framing::Length(_) | Framing::None => stream.write_all(piece).await,
        Framing::Chunked => {
            let size = format!("{:x}\r\n", piece.len());
            write_all_vectored(stream, size.as_bytes(), piece).await?;
            stream.write_all(b"\r\n").await
        }
    }
}

/// Ends a streamed body: the last chunk when chunked.
pub(super) async fn finish_body(stream: &mut Stream, framing: Framing) -> io::Result<()> {
    if framing == Framing::Chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await
}

/// Methods a request may be sent again with after a pooled connection broke
/// under it: the ones that mean the same when repeated, and never a POST.
pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: &RequestHeader, framing: Framing, id: Option<&HeaderValue>) -> String {
        let mut out = BytesMut::new();
        write_head(&mut out, req, "/predict", None, framing, id);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn drops_the_key_hop_by_hop_and_nominated_headers() {
        let mut req =
            RequestHeader::build("POST", b"/models/m/production/predict?x=1", None).unwrap();
        for (name, value) in [
            ("host", "gw.example"),
            ("authorization", "Api-Key secret"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "nominated"),
            ("transfer-encoding", "chunked"),
            ("content-length", "99"),
            ("expect", "100-continue"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
        ] {
            req.append_header(name, value).unwrap();
        }
        let text = head(&req, Framing::Length(5), None);
        assert_eq!(
            text,
            "POST /predict HTTP/1.1\r\nhost: gw.example\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn adds_host_from_the_authority_the_id_and_chunked_framing() {
        // As an HTTP/2 request arrives: the host only in the URI.
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.set_uri(http::Uri::from_static("http://gw.example:8080/x"));
        let id = HeaderValue::from_static("abc");
        let mut out = BytesMut::new();
        write_head(
            &mut out,
            &req,
            "/v1/models",
            Some("a=b"),
            Framing::Chunked,
            Some(&id),
        );
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "GET /v1/models?a=b HTTP/1.1\r\nhost: gw.example:8080\r\nx-request-id: abc\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn only_repeatable_methods_are_retried() {
        assert!(idempotent(&Method::GET));
        assert!(!idempotent(&Method::POST));
        assert!(!idempotent(&Method::PATCH));
    }
}
