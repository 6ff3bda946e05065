//! The replica's response, read straight off the connection: the head parsed
//! once (httparse) into the client's response header, with one header map
//! and without the hop-by-hop headers, and the body framed as RFC 9112
//! section 6.3 says: none (HEAD, 204, 304), chunked, `Content-Length`, or
//! until the replica closes. Body pieces are handed out as they arrive,
//! without a copy.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode, header};
use pingora_http::ResponseHeader;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::upstream::{connection_tokens, is_hop_by_hop};

/// Longest response head accepted from a replica.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line or trailer line.
const MAX_LINE: usize = 4 * 1024;
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
}

/// How the rest of the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Until the replica closes the connection.
    UntilClose,
    /// Complete.
    Done,
}

/// What the buffer held at its start.
#[derive(Debug)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An informational head, now consumed.
    Informational,
    /// The final head, as the client's response header (boxed: Pingora
    /// writes it from a box).
    Final(Box<ResponseHeader>),
}

/// What one step of chunked decoding did.
#[derive(Debug)]
enum Step {
    /// Data for the client.
    Piece(Bytes),
    /// Consumed framing; go on.
    Framing,
    /// The buffer holds too little: read more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// A response being read from a replica connection.
#[derive(Debug)]
pub(super) struct Response<S> {
    stream: S,
    /// Read but not consumed yet.
    buf: BytesMut,
    body: Body,
    /// The replica keeps the connection open after this response.
    keep_alive: bool,
    timeout: Duration,
}

impl<S: AsyncRead + Unpin> Response<S> {
    /// Reads the final response head (informational ones are skipped) and
    /// returns it as the client's response header. `head_only`: the request
    /// was a HEAD, so no body follows whatever the head says.
    pub(super) async fn read_head(
        stream: S,
        head_only: bool,
        timeout: Duration,
    ) -> Result<(Self, Box<ResponseHeader>), ResponseError> {
        let mut response = Self {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            body: Body::Done,
            keep_alive: true,
            timeout,
        };
        let mut read_any = false;
        let mut informational = 0;
        loop {
            match response.parse_head(head_only)? {
                Parsed::Final(head) => return Ok((response, head)),
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
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                connection.read(h.value);
            }
        }
        self.keep_alive = if http10 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        };
        let mut out = ResponseHeader::build_no_case(status, Some(parsed.headers.len() + 2))
            .map_err(|_| ResponseError::Malformed("bad status code"))?;
        let mut length: Option<u64> = None;
        let mut chunked = None;
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ResponseError::Malformed("bad header name"))?;
            if name == header::CONTENT_LENGTH {
                let n = content_length(h.value)?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(ResponseError::Malformed("conflicting Content-Length"));
                }
                length = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                // The last coding listed is the one that frames the body.
                chunked = Some(last_coding_is_chunked(h.value));
            }
            // Hop-by-hop headers stop here; the framing headers stay: the
            // client's side of the response is framed from them.
            if is_hop_by_hop(&name) || connection.nominates(&name) {
                continue;
            }
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| ResponseError::Malformed("bad header value"))?;
            out.append_header(name, value)
                .map_err(|_| ResponseError::Malformed("bad header"))?;
        }
        self.buf.advance(len);
        self.body = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Body::Done
        } else if let Some(chunked) = chunked {
            // Transfer-Encoding wins over Content-Length, which then must
            // not reach the client beside it.
            out.remove_header(&header::CONTENT_LENGTH);
            if chunked {
                Body::Chunked(Chunk::Size)
            } else {
                Body::UntilClose
            }
        } else {
            match length {
                Some(0) => Body::Done,
                Some(n) => Body::Length(n),
                None => Body::UntilClose,
            }
        };
        if self.body == Body::UntilClose {
            self.keep_alive = false;
        }
        Ok(Parsed::Final(Box::new(out)))
    }

    /// The next piece of the body as it arrives; `None` once it is
    /// complete.
    pub(super) async fn next_piece(&mut self) -> Result<Option<Bytes>, ResponseError> {
        loop {
            match self.body {
                Body::Done => return Ok(None),
                Body::Length(remaining) => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(ResponseError::Closed {
                            nothing_read: false,
                        });
                    }
                    let n = (self.buf.len() as u64).min(remaining);
                    let left = remaining - n;
                    self.body = if left == 0 {
                        Body::Done
                    } else {
                        Body::Length(left)
                    };
                    return Ok(Some(self.buf.split_to(n as usize).freeze()));
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Body::Chunked(chunk) => match self.step_chunked(chunk)? {
                    Step::Piece(piece) => return Ok(Some(piece)),
                    Step::Framing => {}
                    Step::NeedMore => {
                        if self.fill().await? == 0 {
                            return Err(ResponseError::Closed {
                                nothing_read: false,
                            });
                        }
                    }
                },
            }
        }
    }

    /// One step of chunked decoding.
    fn step_chunked(&mut self, chunk: Chunk) -> Result<Step, ResponseError> {
        match chunk {
            Chunk::Data(remaining) => {
                if self.buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (self.buf.len() as u64).min(remaining);
                let left = remaining - n;
                self.body = Body::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Step::Piece(self.buf.split_to(n as usize).freeze()))
            }
            Chunk::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(ResponseError::Malformed("no CRLF after chunk data"));
                }
                self.buf.advance(2);
                self.body = Body::Chunked(Chunk::Size);
                Ok(Step::Framing)
            }
            Chunk::Size => {
                let Some(line) = self.take_line()? else {
                    return Ok(Step::NeedMore);
                };
                let size = chunk_size(&line)?;
                self.body = Body::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Framing)
            }
            Chunk::Trailers => {
                let Some(line) = self.take_line()? else {
                    return Ok(Step::NeedMore);
                };
                if line.is_empty() {
                    self.body = Body::Done;
                }
                Ok(Step::Framing)
            }
        }
    }

    /// A CRLF-terminated line at the start of the buffer, without its CRLF.
    fn take_line(&mut self) -> Result<Option<Bytes>, ResponseError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let line = self.buf.split_to(end).freeze();
                self.buf.advance(2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => {
                Err(ResponseError::Malformed("chunk line too long"))
            }
            None => Ok(None),
        }
    }

    /// Reads more into the buffer, within the read timeout; 0 at the end.
    async fn fill(&mut self) -> Result<usize, ResponseError> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(ResponseError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(ResponseError::Io(e)),
            Ok(Ok(n)) => Ok(n),
        }
    }

    /// The connection, if it can carry another request: the response ended
    /// where its framing said, the replica keeps it open, and nothing more
    /// was sent on it.
    pub(super) fn into_reusable(self) -> Option<S> {
        (self.body == Body::Done && self.keep_alive && self.buf.is_empty()).then_some(self.stream)
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

    fn nominates(&self, name: &HeaderName) -> bool {
        self.nominated
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
    }
}

/// A `Content-Length` value: digits, or a list of the same digits.
fn content_length(value: &[u8]) -> Result<u64, ResponseError> {
    let bad = ResponseError::Malformed("bad Content-Length");
    let mut found = None;
    for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let n: u64 = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ResponseError::Malformed("bad Content-Length"))?;
        if found.is_some_and(|seen| seen != n) {
            return Err(ResponseError::Malformed("conflicting Content-Length"));
        }
        found = Some(n);
    }
    found.ok_or(bad)
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The size in a chunk-size line (`1a;ext=x`).
fn chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ResponseError::Malformed("bad chunk size"));
    }
    let text =
        std::str::from_utf8(digits).map_err(|_| ResponseError::Malformed("bad chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| ResponseError::Malformed("bad chunk size"))
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// A replica connection that hands out at most `step` bytes per read,
    /// then reports the end.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let end = self
                .at
                .saturating_add(self.step)
                .min(self.data.len())
                .min(self.at + buf.remaining());
            buf.put_slice(&self.data[self.at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    const T: Duration = Duration::from_secs(5);

    /// A connection the replica reset.
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }

    #[tokio::test]
    async fn a_reset_before_any_byte_reads_as_an_early_close() {
        let read = Response::read_head(Reset, false, T).await;
        assert!(matches!(
            read,
            Err(ResponseError::Closed { nothing_read: true })
        ));
    }

    /// The head, the body and whether the connection is reusable, reading
    /// `wire` `step` bytes at a time.
    async fn read(
        wire: &str,
        step: usize,
        head_only: bool,
    ) -> Result<(Box<ResponseHeader>, Vec<u8>, bool), ResponseError> {
        let stream = Trickle {
            data: wire.as_bytes().to_vec(),
            at: 0,
            step,
        };
        let (mut response, head) = Response::read_head(stream, head_only, T).await?;
        let mut body = Vec::new();
        while let Some(piece) = response.next_piece().await? {
            assert!(!piece.is_empty(), "no empty pieces");
            body.extend_from_slice(&piece);
        }
        Ok((head, body, response.into_reusable().is_some()))
    }

    async fn each_step(wire: &str, head_only: bool) -> (Box<ResponseHeader>, Vec<u8>, bool) {
        let whole = read(wire, usize::MAX, head_only).await.unwrap();
        for step in [1, 2, 3, 7] {
            let piecemeal = read(wire, step, head_only).await.unwrap();
            assert_eq!(piecemeal.1, whole.1, "step {step}");
            assert_eq!(piecemeal.2, whole.2, "step {step}");
        }
        whole
    }

    #[tokio::test]
    async fn content_length_body_and_end_to_end_headers() {
        let (head, body, reusable) = each_step(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, x-hop\r\n\
             Keep-Alive: timeout=5\r\nX-Hop: 1\r\nContent-Length: 5\r\n\r\nhello",
            false,
        )
        .await;
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(head.headers["content-length"], "5");
        for gone in ["connection", "keep-alive", "x-hop"] {
            assert!(!head.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(body, b"hello");
        assert!(reusable);
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let (head, body, reusable) = each_step(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
             5;name=x\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer-A: 1\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(body, b"hello world");
        assert_eq!(head.headers["transfer-encoding"], "chunked");
        assert!(
            !head.headers.contains_key("content-length"),
            "never both framings"
        );
        assert!(reusable);
    }

    #[tokio::test]
    async fn informational_heads_are_skipped_and_some_statuses_have_no_body() {
        let (head, body, reusable) = each_step(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(head.status, 204);
        assert!(body.is_empty());
        assert!(reusable);
        let (head, body, reusable) =
            each_step("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).await;
        assert_eq!(
            head.headers["content-length"], "10",
            "HEAD keeps the GET's length"
        );
        assert!(body.is_empty());
        assert!(reusable);
    }

    #[tokio::test]
    async fn connections_that_cannot_carry_another_request() {
        // Closed by the replica's choice, HTTP/1.0, body until close, bytes
        // after the body.
        for wire in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        ] {
            let (_, body, reusable) = read(wire, usize::MAX, false).await.unwrap();
            assert_eq!(body, b"ok", "{wire:?}");
            assert!(!reusable, "{wire:?}");
        }
        let (_, _, reusable) = read(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            usize::MAX,
            false,
        )
        .await
        .unwrap();
        assert!(reusable, "HTTP/1.0 asking for keep-alive");
    }

    #[tokio::test]
    async fn broken_responses_are_errors() {
        let closed = |nothing: bool| move |r: Result<_, ResponseError>| matches!(r, Err(ResponseError::Closed { nothing_read }) if nothing_read == nothing);
        assert!(closed(true)(read("", 4, false).await));
        assert!(closed(false)(
            read("HTTP/1.1 200 OK\r\nContent", 4, false).await
        ));
        assert!(closed(false)(
            read(
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                4,
                false
            )
            .await
        ));
        assert!(closed(false)(
            read(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                4,
                false
            )
            .await
        ));
        for wire in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            &"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000),
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                matches!(
                    read(wire, usize::MAX, false).await,
                    Err(ResponseError::Malformed(_))
                ),
                "{wire:?}"
            );
        }
        let (_, body, _) = read(
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            usize::MAX,
            false,
        )
        .await
        .unwrap();
        assert_eq!(body, b"ok", "a list of one length is that length");
    }
}
