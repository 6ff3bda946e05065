//! The replica's response, read straight off the connection: the head parsed
//! once (httparse) into offsets into its own bytes, without the hop-by-hop
//! headers and without a header map, and the body framed as RFC 9112
//! section 6.3 says: none (HEAD, 204, 304), chunked, `Content-Length`, or
//! until the replica closes. Body pieces are handed out as they arrive,
//! without a copy.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::ResponseHeader;
use tokio::io::AsyncRead;
use tokio::time::Instant;

use crate::http1::{
    BodyDecoder, BodyError, Decoded, Span, connection_tokens, content_length, is_hop_by_hop,
    last_coding_is_chunked, read_more,
};

/// Longest response head accepted from a replica.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 128;
/// What one read asks for.
const READ_SIZE: usize = 16 * 1024;
/// Informational heads (100, 103) skipped before the final one; more is a
/// broken replica.
const MAX_INFORMATIONAL: usize = 16;

/// Why a replica's response could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResponseError {
    /// No byte came for the read timeout.
    #[error("the replica sent nothing for {0:?}")]
    Timeout(Duration),
    /// The connection ended early; `nothing_read`: before any byte of the
    /// response (what a connection the replica closed while idle looks like).
    #[error("the replica closed the connection mid-response")]
    Closed {
        /// No byte of the response had arrived.
        nothing_read: bool,
    },
    /// A read failed.
    #[error("reading from the replica: {0}")]
    Io(std::io::Error),
    /// Not a well-formed HTTP/1.x response.
    #[error("malformed response from the replica: {0}")]
    Malformed(&'static str),
    /// A body whose framing is broken.
    #[error("malformed response body from the replica: {0}")]
    Body(#[from] BodyError),
}

/// What the buffer held at its start.
#[derive(Debug)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An informational head, now consumed.
    Informational,
    /// The final head.
    Final(ResponseHead),
}

/// A response being read from a replica connection.
#[derive(Debug)]
pub(super) struct Response<S> {
    stream: S,
    /// Read but not consumed yet.
    buf: BytesMut,
    body: BodyDecoder,
    /// The replica keeps the connection open after this response.
    keep_alive: bool,
    timeout: Duration,
    /// No read waits past this: the request's deadline.
    deadline: Instant,
    /// Pass the replica's `x-replica-id` on to the client.
    expose_replica_id: bool,
}

impl<S: AsyncRead + Unpin> Response<S> {
    /// Reads the final response head (informational ones are skipped) and
    /// returns it as the client's response header. `head_only`: the request
    /// was a HEAD, so no body follows whatever the head says. The head may
    /// take `first_byte` (a model's work before it answers); the body may
    /// then fall silent for `idle` at most between pieces.
    pub(super) async fn read_head(
        stream: S,
        head_only: bool,
        first_byte: Duration,
        idle: Duration,
        deadline: Instant,
        expose_replica_id: bool,
    ) -> Result<(Self, ResponseHead), ResponseError> {
        let mut response = Self {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            body: BodyDecoder::none(),
            keep_alive: true,
            timeout: first_byte,
            deadline,
            expose_replica_id,
        };
        let mut read_any = false;
        let mut informational = 0;
        loop {
            match response.parse_head(head_only)? {
                Parsed::Final(head) => {
                    response.timeout = idle;
                    return Ok((response, head));
                }
                Parsed::Informational => {
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(ResponseError::Malformed("too many informational responses"));
                    }
                    continue;
                }
                Parsed::Partial => {}
            }
            if response.buf.len() > MAX_HEAD {
                return Err(ResponseError::Malformed("response head too large"));
            }
            let nothing_read = !read_any && response.buf.is_empty();
            match response.fill().await {
                Ok(0) => return Err(ResponseError::Closed { nothing_read }),
                Ok(_) => read_any = true,
                // A reset before any byte is how a connection the replica
                // dropped while idle answers a request, like an early close.
                Err(ResponseError::Io(_)) if nothing_read => {
                    return Err(ResponseError::Closed { nothing_read });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Parses a complete head at the start of the buffer, if there is one.
    fn parse_head(&mut self, head_only: bool) -> Result<Parsed, ResponseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(_) => return Err(ResponseError::Malformed("unparsable response head")),
        };
        let code = parsed.code.ok_or(ResponseError::Malformed("no status"))?;
        let status =
            StatusCode::from_u16(code).map_err(|_| ResponseError::Malformed("bad status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The gateway never forwards `Upgrade`.
            return Err(ResponseError::Malformed("unexpected 101"));
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: not for the client.
            self.buf.advance(len);
            return Ok(Parsed::Informational);
        }
        let http10 = parsed.version == Some(0);
        let mut connection = Connection::default();
        let mut length: Option<u64> = None;
        let mut chunked = None;
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                connection.read(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(h.value)
                    .ok_or(ResponseError::Malformed("bad Content-Length"))?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(ResponseError::Malformed("conflicting Content-Length"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The last coding listed is the one that frames the body.
                chunked = Some(last_coding_is_chunked(h.value));
            }
        }
        self.keep_alive = if http10 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        };
        let base = self.buf.as_ptr();
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            // Hop-by-hop headers stop here; the framing headers stay: the
            // client's side of the response is framed from them, but
            // Transfer-Encoding wins over Content-Length, which then must
            // not reach the client beside it. The replica's `Server` and
            // its id are internals (nginx hides `Server` too); the headers
            // the gateway sets itself are never the replica's to send.
            if is_hop_by_hop(name)
                || connection.nominates(name)
                || name.eq_ignore_ascii_case(b"server")
                || name.eq_ignore_ascii_case(b"x-deployment-id")
                || name.eq_ignore_ascii_case(b"x-gateway-attempts")
                || (!self.expose_replica_id && name.eq_ignore_ascii_case(b"x-replica-id"))
                || (chunked.is_some() && name.eq_ignore_ascii_case(b"content-length"))
            {
                continue;
            }
            fields.push((Span::of(base, name), Span::of(base, h.value)));
        }
        let head = ResponseHead {
            status,
            raw: self.buf.split_to(len).freeze(),
            fields,
        };
        self.body = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            BodyDecoder::none()
        } else if let Some(chunked) = chunked {
            if chunked {
                BodyDecoder::chunked()
            } else {
                BodyDecoder::until_close()
            }
        } else {
            length.map_or_else(BodyDecoder::until_close, BodyDecoder::length)
        };
        if self.body.ends_at_close() {
            self.keep_alive = false;
        }
        Ok(Parsed::Final(head))
    }

    /// The next piece of the body as it arrives; `None` once it is
    /// complete.
    pub(super) async fn next_piece(&mut self) -> Result<Option<Bytes>, ResponseError> {
        loop {
            match self.body.decode(&mut self.buf)? {
                Decoded::Piece(piece) => return Ok(Some(piece)),
                Decoded::Done => return Ok(None),
                Decoded::NeedMore => {
                    if self.fill().await? == 0 {
                        if self.body.ends_at_close() {
                            self.body.closed();
                            return Ok(None);
                        }
                        return Err(ResponseError::Closed {
                            nothing_read: false,
                        });
                    }
                }
            }
        }
    }

    /// Whether body bytes are already read, waiting to be relayed.
    pub(super) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads more into the buffer, within the read timeout and the
    /// deadline; 0 at the end.
    async fn fill(&mut self) -> Result<usize, ResponseError> {
        let read = read_more(&mut self.stream, &mut self.buf, READ_SIZE);
        let until = (Instant::now() + self.timeout).min(self.deadline);
        match tokio::time::timeout_at(until, read).await {
            Err(_) => Err(ResponseError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(ResponseError::Io(e)),
            Ok(Ok(n)) => Ok(n),
        }
    }

    /// The connection, if it can carry another request: the response ended
    /// where its framing said, the replica keeps it open, and nothing more
    /// was sent on it.
    pub(super) fn into_reusable(self) -> Option<S> {
        (self.body.is_done() && self.keep_alive && self.buf.is_empty()).then_some(self.stream)
    }
}

/// A replica's final response head: its status and end-to-end fields, as
/// offsets into the head's bytes.
#[derive(Debug)]
pub(super) struct ResponseHead {
    status: StatusCode,
    raw: Bytes,
    fields: Vec<(Span, Span)>,
}

impl ResponseHead {
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// The fields the client gets, as the replica sent them.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (name.get(&self.raw), value.get(&self.raw)))
    }

    /// Whether the status counts against the replica for outlier
    /// detection: a 5xx, except a 503 with `Retry-After`, which says the
    /// replica is busy rather than broken.
    pub(super) fn is_replica_failure(&self) -> bool {
        self.status.is_server_error() && !self.is_busy()
    }

    /// Whether the replica said it is busy rather than broken: a 503 with
    /// `Retry-After`, which processed nothing of the request.
    pub(super) fn is_busy(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE && self.field(b"retry-after").is_some()
    }

    /// The first field named `name` (any case).
    pub(super) fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// As Pingora's response header, for an HTTP/2 client (which frames
    /// the body itself: no `Transfer-Encoding`).
    pub(super) fn to_pingora(&self) -> Option<Box<ResponseHeader>> {
        let mut out = ResponseHeader::build(self.status, Some(self.fields.len())).ok()?;
        for (name, value) in self.fields() {
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                continue;
            }
            let name = HeaderName::from_bytes(name).ok()?;
            let value = HeaderValue::from_bytes(value).ok()?;
            out.append_header(name, value).ok()?;
        }
        Some(Box::new(out))
    }
}

/// What a response's `Connection` headers say.
#[derive(Debug, Default)]
struct Connection<'a> {
    close: bool,
    keep_alive: bool,
    /// Other tokens: headers that stop here.
    nominated: Vec<&'a [u8]>,
}

impl<'a> Connection<'a> {
    fn read(&mut self, value: &'a [u8]) {
        for token in connection_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.nominated.push(token);
            }
        }
    }

    fn nominates(&self, name: &[u8]) -> bool {
        self.nominated.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests;
