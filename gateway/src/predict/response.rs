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
mod tests;
