//! One client connection over HTTP/1.x: request heads read into one
//! buffer that is kept from request to request (what a client pipelines
//! stays in it for the next one), bodies decoded out of it, and responses
//! gathered so that a head and a small body reach the stream in one write
//! (under TLS, one record), sent once per body piece (and a body of known
//! length once, at its end).

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use pingora_core::protocols::http::date;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::request::{HeadLimits, HeadScan};
use super::{
    BodyDecoder, BodyError, Decoded, HeadError, RequestHead, content_length, put_field, read_more,
    within,
};

/// What a client connection may send, and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may wait for its next request (and a new
    /// one for its first): then it is closed.
    pub idle_timeout: Duration,
    /// How long a request head may take once its first byte came (408).
    pub head_timeout: Duration,
    /// Longest silence while a request body is read (408).
    pub body_timeout: Duration,
    /// Longest a write to the client may wait: a client that takes nothing
    /// for this long has stopped reading, and its connection is closed.
    pub send_timeout: Duration,
    pub head: HeadLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            head: HeadLimits::default(),
        }
    }
}
/// What one read asks for, at least.
const READ_SIZE: usize = 8 * 1024;
/// Response bytes gathered into one write at most: a TLS record's payload.
const COALESCE: usize = 16 * 1024;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// Its framing is broken.
    #[error(transparent)]
    Framing(#[from] BodyError),
    /// The client closed the connection before the body ended.
    #[error("the client closed the connection mid-body")]
    Cut,
    /// No byte came for the body timeout.
    #[error("the request body timed out")]
    Timeout,
    /// The body announced (by a chunk size, say) more than its limit.
    #[error("the request body is larger than allowed")]
    TooLarge,
    /// A read failed.
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
}

/// How the response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body (HEAD, 204, 304).
    Empty,
    /// This many bytes to go.
    Length(u64),
    Chunked,
    /// Until the gateway closes the connection (an HTTP/1.0 client and no
    /// length).
    UntilClose,
}

/// A client connection.
#[derive(Debug)]
pub struct ServerConn<S> {
    stream: S,
    /// Read, not consumed: the rest of a body, pipelined requests.
    buf: BytesMut,
    head: RequestHead,
    body: BodyDecoder,
    /// The connection takes another request after this one.
    keep_alive: bool,
    /// The response's status, once its head is written.
    status: Option<StatusCode>,
    out: Out,
    body_bytes_sent: u64,
    /// Response bytes not yet handed to the stream: a head, and the body
    /// pieces that fit behind it.
    pending: BytesMut,
    limits: Limits,
    /// The client's address as the replica is told it, when it is.
    peer: Option<Box<str>>,
    /// Body bytes of this request decoded so far, and the most allowed.
    body_read: u64,
    body_limit: u64,
    /// No body read of this request waits past it.
    deadline: Option<tokio::time::Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerConn<S> {
    pub fn new(stream: S, limits: Limits) -> Self {
        Self::with_buffer(stream, BytesMut::with_capacity(READ_SIZE), limits)
    }

    /// A connection whose first bytes were read already (into `buf`).
    pub fn with_buffer(stream: S, buf: BytesMut, limits: Limits) -> Self {
        Self {
            stream,
            buf,
            head: RequestHead::default(),
            body: BodyDecoder::none(),
            keep_alive: true,
            status: None,
            out: Out::Empty,
            body_bytes_sent: 0,
            pending: BytesMut::with_capacity(1024),
            limits,
            peer: None,
            body_read: 0,
            body_limit: u64::MAX,
            deadline: None,
        }
    }

    /// No read of this request's body waits past `deadline` (408 then, as
    /// for a body silent for the body timeout).
    pub fn set_deadline(&mut self, deadline: tokio::time::Instant) {
        self.deadline = Some(deadline);
    }

    /// The largest body this request may have: one that announces more (a
    /// chunk size beyond it, say) fails before its bytes are waited for.
    pub fn set_body_limit(&mut self, limit: u64) {
        self.body_limit = limit;
    }

    /// Records the client's address (its IP, as text).
    pub fn set_peer(&mut self, peer: Option<Box<str>>) {
        self.peer = peer;
    }

    /// The client's address, if recorded.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// Reads the next request head: `Ok(false)` when the client closed the
    /// connection, or left it idle for the idle timeout, between requests.
    pub async fn read_request(&mut self) -> Result<bool, HeadError> {
        self.pending.clear();
        self.status = None;
        self.out = Out::Empty;
        self.body_bytes_sent = 0;
        self.body_read = 0;
        self.body_limit = u64::MAX;
        self.deadline = None;
        let mut deadline = None;
        let mut scan = HeadScan::default();
        loop {
            if !self.buf.is_empty()
                && scan.should_parse(&self.buf, self.limits.head)
                && self
                    .head
                    .parse(&mut self.buf, self.limits.head)
                    .inspect_err(|_| self.keep_alive = false)?
            {
                self.body = self.head.body();
                self.keep_alive = self.head.keep_alive();
                return Ok(true);
            }
            let wait = match deadline {
                None if self.buf.is_empty() => self.limits.idle_timeout,
                None => {
                    let wait = self.limits.head_timeout;
                    deadline = Some(tokio::time::Instant::now() + wait);
                    wait
                }
                Some(at) => at.saturating_duration_since(tokio::time::Instant::now()),
            };
            let idle = self.buf.is_empty();
            // A plain timeout: this read usually waits (for the client's
            // next request).
            let read = read_more(&mut self.stream, &mut self.buf, READ_SIZE);
            match tokio::time::timeout(wait, read).await {
                Ok(Ok(n)) if n > 0 => {}
                _ if idle => return Ok(false),
                Err(_) => return Err(HeadError::Timeout),
                Ok(_) => return Err(HeadError::Cut),
            }
        }
    }

    /// The request read last.
    pub fn head(&self) -> &RequestHead {
        &self.head
    }

    /// The next piece of the request body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, BodyReadError> {
        loop {
            match self.body.decode(&mut self.buf)? {
                Decoded::Piece(piece) => {
                    self.body_read += piece.len() as u64;
                    return Ok(Some(piece));
                }
                Decoded::Done => return Ok(None),
                Decoded::NeedMore => {
                    if self.body_read.saturating_add(self.body.announced()) > self.body_limit {
                        return Err(BodyReadError::TooLarge);
                    }
                    let read = read_more(&mut self.stream, &mut self.buf, READ_SIZE);
                    let mut until = tokio::time::Instant::now() + self.limits.body_timeout;
                    if let Some(deadline) = self.deadline {
                        until = until.min(deadline);
                    }
                    match tokio::time::timeout_at(until, read).await {
                        Err(_) => return Err(BodyReadError::Timeout),
                        Ok(Ok(0)) => return Err(BodyReadError::Cut),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Whether the request body has been read to its end.
    pub fn body_is_done(&self) -> bool {
        self.body.is_done()
    }

    /// Resolves when the client closes the connection (or it fails).
    /// Bytes that come meanwhile are the client's next requests: they stay
    /// for later, up to a head's worth, after which reading stops.
    pub async fn closed(&mut self) {
        if !self.body.is_done() {
            // The body comes first: the close is not visible before it.
            return std::future::pending().await;
        }
        while self.buf.len() <= self.limits.head.max_head_bytes {
            match read_more(&mut self.stream, &mut self.buf, READ_SIZE).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        std::future::pending().await
    }

    /// Tells a client that waits (`Expect: 100-continue`) to send its body.
    pub async fn write_continue(&mut self) -> io::Result<()> {
        if self.head.version() == Version::HTTP_10 {
            return Ok(());
        }
        self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        self.flush_stream().await
    }

    /// This request is the connection's last.
    pub fn set_close(&mut self) {
        self.keep_alive = false;
    }

    /// Writes the response head: `status`, then `fields` (framing,
    /// connection and date fields among them are the connection's to write:
    /// they are dropped and written from how the body is framed, whether
    /// the connection stays open, and the clock). Buffered: it
    /// leaves with the first body piece, or at `finish`.
    pub async fn write_head<'a>(
        &mut self,
        status: StatusCode,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> io::Result<()> {
        let no_body = *self.head.method() == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_informational();
        // A request body not all here by now (a refusal before it was
        // read, say) closes the connection after the response: the client
        // is told so, rather than finding out on its next request.
        let body_read = self.skip_buffered_body();
        let out = &mut self.pending;
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.put_slice(b"\r\n");
        let mut length = None;
        for (name, value) in fields {
            if name.eq_ignore_ascii_case(b"content-length") {
                length = content_length(value);
            } else if !name.eq_ignore_ascii_case(b"transfer-encoding")
                && !name.eq_ignore_ascii_case(b"connection")
                && !name.eq_ignore_ascii_case(b"date")
            {
                put_field(out, name, value);
            }
        }
        // The gateway's clock, as every response from it had under
        // Pingora's session (cached per second per thread).
        put_field(out, b"date", date::get_cached_date().as_bytes());
        self.out = match length {
            _ if no_body => Out::Empty,
            Some(n) => Out::Length(n),
            None if self.head.version() == Version::HTTP_10 => Out::UntilClose,
            None => Out::Chunked,
        };
        match (self.out, length) {
            // A HEAD's length is the one the GET would have.
            (_, Some(n)) => {
                let mut digits = itoa::Buffer::new();
                put_field(out, b"content-length", digits.format(n).as_bytes());
            }
            (Out::Chunked, None) => put_field(out, b"transfer-encoding", b"chunked"),
            _ => {}
        }
        if self.out == Out::UntilClose || !body_read {
            self.keep_alive = false;
        }
        let connection = if self.keep_alive {
            &b"keep-alive"[..]
        } else {
            b"close"
        };
        put_field(out, b"connection", connection);
        out.put_slice(b"\r\n");
        self.status = Some(status);
        Ok(())
    }

    /// Sends what is buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.write_pending().await?;
        self.flush_stream().await
    }

    /// Flushes the stream (under TLS, what the TLS layer holds), within the
    /// send timeout.
    async fn flush_stream(&mut self) -> io::Result<()> {
        within(self.limits.send_timeout, self.stream.flush())
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Writes all of `bytes`, each write within the send timeout: a
    /// minimum send rate of one byte per timeout, so that a client that
    /// stopped reading cannot hold its connection (and whatever waits on
    /// it) for ever.
    async fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let write = self.stream.write(bytes);
            match within(self.limits.send_timeout, write).await {
                Some(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Some(Ok(n)) => bytes = &bytes[n..],
                Some(Err(e)) => return Err(e),
                None => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
        Ok(())
    }

    /// Queues `part` behind what is pending, so that a head and a small
    /// body go to the stream in one write (under TLS: one record, one
    /// encryption); a large part is written on its own, after the pending
    /// bytes.
    async fn put(&mut self, part: &[u8]) -> io::Result<()> {
        if self.pending.len() + part.len() > COALESCE {
            self.write_pending().await?;
            if part.len() > COALESCE {
                return self.send(part).await;
            }
        }
        self.pending.extend_from_slice(part);
        Ok(())
    }

    async fn write_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let sent = self.send(&pending).await;
            self.pending = pending;
            self.pending.clear();
            sent?;
        }
        Ok(())
    }

    /// Writes one piece of the response body and sends what is buffered,
    /// unless the piece completes a body of known length: that one leaves
    /// at `finish` (or `flush`), after the request is recorded, so that a
    /// client never sees a response before the gateway has counted it.
    pub async fn write_body(&mut self, piece: &[u8]) -> io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        match self.out {
            Out::Empty => return Ok(()),
            Out::Length(left) => {
                let n = (piece.len() as u64).min(left);
                self.out = Out::Length(left - n);
                self.put(&piece[..n as usize]).await?;
                self.body_bytes_sent += n;
                if left == n {
                    return Ok(());
                }
            }
            Out::Chunked => {
                let mut size = [0u8; 18];
                self.put(chunk_line(&mut size, piece.len())).await?;
                self.put(piece).await?;
                self.put(b"\r\n").await?;
                self.body_bytes_sent += piece.len() as u64;
            }
            Out::UntilClose => {
                self.put(piece).await?;
                self.body_bytes_sent += piece.len() as u64;
            }
        }
        self.flush().await
    }

    /// Ends the response and sends what is buffered. Whether the connection
    /// takes another request: the client keeps it, the response was whole,
    /// and the request body was read to its end (what of it is already
    /// here is skipped; a body left unread closes the connection).
    pub async fn finish(&mut self) -> io::Result<bool> {
        match self.out {
            Out::Chunked => self.put(b"0\r\n\r\n").await?,
            Out::Length(left) if left > 0 => self.keep_alive = false,
            _ => {}
        }
        self.flush().await?;
        if !self.skip_buffered_body() {
            self.keep_alive = false;
        }
        Ok(self.keep_alive && self.out != Out::UntilClose)
    }

    /// Skips what of the request body is already here (what follows it,
    /// a pipelined request, stays); whether the body has been read to its
    /// end. If not, the connection cannot take another request.
    fn skip_buffered_body(&mut self) -> bool {
        while !self.body.is_done() {
            match self.body.decode(&mut self.buf) {
                Ok(Decoded::Piece(_) | Decoded::Done) => {}
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        }
        true
    }

    /// The status of the response whose head was written.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Body bytes written to the client for this request.
    pub fn body_bytes_sent(&self) -> u64 {
        self.body_bytes_sent
    }
}

/// `len` in hex with CRLF, written into `buf`.
fn chunk_line(buf: &mut [u8; 18], len: usize) -> &[u8] {
    let mut at = 16;
    let mut n = len;
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

#[cfg(test)]
mod tests;
