//! The replica side of one exchange: the request head the gateway writes
//! itself (straight from the client's header, no header-map clone), the
//! write of head and body, and the framing rules of what is forwarded.

use std::io::{self, IoSlice};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method};
use tokio::io::AsyncWriteExt;

use crate::access_log::is_valid_request_id;
use crate::http1::{RequestHead, connection_tokens, is_hop_by_hop, put_field};
use config::ForwardedFor;

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

/// What the replica is told of the client's address: the policy, and the
/// client's IP (`None` when unknown, or under `off`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientAddress<'a> {
    pub(super) policy: ForwardedFor,
    pub(super) peer: Option<&'a str>,
}

/// The request line and headers the replica gets: the client's method, the
/// replica path (`/predict` or the passthrough route) with the client's
/// query, the client's end-to-end headers, `X-Forwarded-For` as configured,
/// the gateway's framing, and the request id when the gateway made it up.
/// Never the client's key, any hop-by-hop header or one the client's
/// `Connection` header nominates, a header that is the gateway's to set
/// (`x-deployment-id`, `x-rollout-side`), nor an invalid `x-request-id`.
pub(super) fn write_head(
    out: &mut BytesMut,
    req: &RequestHead,
    path: &str,
    framing: Framing,
    request_id: Option<&HeaderValue>,
    client: ClientAddress<'_>,
) {
    out.put_slice(req.method().as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    if let Some(query) = req.query() {
        out.put_u8(b'?');
        out.put_slice(query.as_bytes());
    }
    out.put_slice(b" HTTP/1.1\r\n");
    let nominated = req.field(b"connection");
    if req.field(b"host").is_none()
        && let Some(authority) = req.authority()
    {
        // HTTP/2 clients name the host in `:authority`; HTTP/1.1 needs `Host`.
        put_field(out, b"host", authority);
    }
    let mut forwarded_for: Option<&[u8]> = None;
    for (name, value) in req.fields() {
        // A name with `_` is dropped (as nginx does): replicas that read
        // `_` as `-` (WSGI, CGI) would take `X_Forwarded_For` for the
        // header the gateway sets.
        if is_dropped_request_header(name)
            || name.contains(&b'_')
            || nominated.is_some_and(|c| connection_tokens(c).any(|t| t.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // Appended to (one line, after the loop) or replaced.
            forwarded_for = forwarded_for.or(Some(value));
            continue;
        }
        if name.eq_ignore_ascii_case(b"forwarded") && client.policy != ForwardedFor::Append {
            continue;
        }
        if name.eq_ignore_ascii_case(super::REQUEST_ID_HEADER.as_bytes())
            && (request_id.is_some() || !is_valid_request_id(value))
        {
            continue;
        }
        put_field(out, name, value);
    }
    if let Some(id) = request_id {
        put_field(out, super::REQUEST_ID_HEADER.as_bytes(), id.as_bytes());
    }
    write_forwarded_for(out, client, forwarded_for);
    match framing {
        Framing::Length(n) => {
            let mut digits = itoa::Buffer::new();
            put_field(out, b"content-length", digits.format(n).as_bytes());
        }
        Framing::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        Framing::None => {}
    }
    out.put_slice(b"\r\n");
}

/// `X-Forwarded-For` by the policy: the client's address alone (replace),
/// after what the client sent (append), or nothing (off).
fn write_forwarded_for(out: &mut BytesMut, client: ClientAddress<'_>, sent: Option<&[u8]>) {
    const NAME: &[u8] = b"x-forwarded-for";
    match (client.policy, client.peer) {
        (ForwardedFor::Off, _) => {}
        (ForwardedFor::Append, peer) => match (sent, peer) {
            (Some(sent), Some(peer)) => {
                out.put_slice(NAME);
                out.put_slice(b": ");
                out.put_slice(sent);
                out.put_slice(b", ");
                out.put_slice(peer.as_bytes());
                out.put_slice(b"\r\n");
            }
            (Some(only), None) => put_field(out, NAME, only),
            (None, Some(peer)) => put_field(out, NAME, peer.as_bytes()),
            (None, None) => {}
        },
        (ForwardedFor::Replace, Some(peer)) => put_field(out, NAME, peer.as_bytes()),
        (ForwardedFor::Replace, None) => {}
    }
}

/// Request headers that are the gateway's to write or that stop here: the
/// client's key, hop-by-hop headers and the framing headers, which the
/// gateway sets from the body it forwards. `Expect` is answered by the
/// gateway itself.
fn is_dropped_request_header(name: &[u8]) -> bool {
    is_hop_by_hop(name)
        || [
            &b"authorization"[..],
            b"content-length",
            b"transfer-encoding",
            b"expect",
            b"proxy-authorization",
            b"x-deployment-id",
            b"x-rollout-side",
        ]
        .iter()
        .any(|dropped| name.eq_ignore_ascii_case(dropped))
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

    fn parse(wire: &str) -> RequestHead {
        let mut buf = BytesMut::from(wire.as_bytes());
        let mut head = RequestHead::default();
        assert!(
            head.parse(&mut buf, crate::http1::HeadLimits::default())
                .unwrap()
        );
        head
    }

    fn head(req: &RequestHead, path: &str, framing: Framing, id: Option<&HeaderValue>) -> String {
        let mut out = BytesMut::new();
        let client = ClientAddress {
            policy: ForwardedFor::Replace,
            peer: Some("192.0.2.7"),
        };
        write_head(&mut out, req, path, framing, id, client);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn drops_the_key_hop_by_hop_and_nominated_headers() {
        let req = parse(
            "POST /models/m/production/predict?x=1 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Api-Key secret\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nx-private: nominated\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nTE: trailers\r\nUpgrade: websocket\r\nContent-Type: application/json\r\n\r\n",
        );
        assert_eq!(
            head(&req, "/predict", Framing::Length(5), None),
            "POST /predict?x=1 HTTP/1.1\r\nHost: gw.example\r\nContent-Type: application/json\r\nx-forwarded-for: 192.0.2.7\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn adds_host_from_the_authority_the_id_and_chunked_framing() {
        // As an HTTP/2 request arrives: the host only in the URI.
        let mut h2 = pingora_http::RequestHeader::build("GET", b"/x?a=b", None).unwrap();
        h2.set_uri(http::Uri::from_static("http://gw.example:8080/x?a=b"));
        let req = RequestHead::from_h2(&h2);
        let id = HeaderValue::from_static("abc");
        assert_eq!(
            head(&req, "/v1/models", Framing::Chunked, Some(&id)),
            "GET /v1/models?a=b HTTP/1.1\r\nhost: gw.example:8080\r\nx-request-id: abc\r\nx-forwarded-for: 192.0.2.7\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn the_gateway_sets_forwarding_and_drops_what_is_its_own() {
        let req = parse(
            "POST /p HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nx-deployment-id: evil\r\nx-rollout-side: canary\r\nx-request-id: bad id\r\n\r\n",
        );
        let written = |policy, peer| {
            let mut out = BytesMut::new();
            write_head(
                &mut out,
                &req,
                "/predict",
                Framing::None,
                None,
                ClientAddress { policy, peer },
            );
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(
            written(ForwardedFor::Replace, Some("192.0.2.7")),
            "POST /predict HTTP/1.1\r\nHost: gw\r\nx-forwarded-for: 192.0.2.7\r\n\r\n"
        );
        assert_eq!(
            written(ForwardedFor::Append, Some("192.0.2.7")),
            "POST /predict HTTP/1.1\r\nHost: gw\r\nForwarded: for=1.2.3.4\r\nx-forwarded-for: 1.2.3.4, 192.0.2.7\r\n\r\n"
        );
        assert_eq!(
            written(ForwardedFor::Off, None),
            "POST /predict HTTP/1.1\r\nHost: gw\r\n\r\n"
        );
    }

    #[test]
    fn only_repeatable_methods_are_retried() {
        assert!(idempotent(&Method::GET));
        assert!(!idempotent(&Method::POST));
        assert!(!idempotent(&Method::PATCH));
    }
}
