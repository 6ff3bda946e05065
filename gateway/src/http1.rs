//! HTTP/1.1 on the wire, both directions: the client's request head parsed
//! once into [`RequestHead`] (httparse, held to RFC 9112's framing rules),
//! the client connection ([`ServerConn`]: heads, bodies, responses,
//! keep-alive and pipelining), and the body framing both directions share
//! ([`BodyDecoder`]). The replica's response head is read by
//! `predict::response` with the same pieces.

pub mod body;
pub mod request;
pub mod server;

pub use body::{BodyDecoder, BodyError, Decoded};
pub use request::{HeadError, HeadLimits, RequestHead};
pub use server::{Limits, ServerConn};

use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `future`, unless `limit` passes first (`None`). The clock is read, and a
/// timer armed, only if the future has to wait: for writes, which on the
/// predict path complete at their first poll (reads usually wait, and take
/// a plain timeout).
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout(limit, future).await.ok(),
    }
}

/// Writes one header field line, `name: value` and CRLF, into a head.
pub fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Reads once from `stream` into `buf`, first making room for `read_size`
/// more bytes when less than half of that is free.
pub async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    read_size: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < read_size / 2 {
        buf.reserve(read_size);
    }
    stream.read_buf(buf).await
}

/// Where a piece of a head lies in the head's bytes: heads are kept as
/// received and their parts found by offset, never copied into maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part`, a slice of the buffer starting at `base`, lies in it.
    pub fn of(base: *const u8, part: &[u8]) -> Self {
        let start = part.as_ptr() as usize - base as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// Its bytes in `raw`.
    pub fn get(self, raw: &[u8]) -> &[u8] {
        &raw[self.start as usize..self.end as usize]
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1), which stop at the gateway in both
/// directions. `Transfer-Encoding` is one too; each side deals with it as
/// part of its framing.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"te",
        b"trailer",
        b"upgrade",
        b"keep-alive",
        b"proxy-connection",
    ]
    .iter()
    .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// The options of a `Connection` header value: `close`, `keep-alive`, or
/// the names of more headers that stop here.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// A `Content-Length` value: digits, or a comma-separated list of the same
/// digits (RFC 9110 8.6); `None` for anything else.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|seen| seen != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Whether the last coding a `Transfer-Encoding` value lists, the one that
/// frames the body, is `chunked`.
pub fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(b"5"), Some(5));
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        for bad in [
            &b"+5"[..],
            b"-1",
            b"0x5",
            b"5 5",
            b"",
            b",",
            b"99999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn codings_and_hop_by_hop() {
        assert!(last_coding_is_chunked(b"gzip, Chunked"));
        assert!(!last_coding_is_chunked(b"chunked, gzip"));
        assert!(is_hop_by_hop(b"Keep-Alive"));
        assert!(!is_hop_by_hop(b"content-type"));
        let tokens: Vec<_> = connection_tokens(b" close ,, X-A").collect();
        assert_eq!(tokens, [&b"close"[..], b"X-A"]);
    }
}
