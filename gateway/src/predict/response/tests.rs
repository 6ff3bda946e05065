//! The response reader against hand-written replica bytes, each read whole
//! and a few bytes at a time.

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
    let read = Response::read_head(Reset, false, T, T, far(), true).await;
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
) -> Result<(ResponseHead, Vec<u8>, bool), ResponseError> {
    let stream = Trickle {
        data: wire.as_bytes().to_vec(),
        at: 0,
        step,
    };
    let (mut response, head) = Response::read_head(stream, head_only, T, T, far(), true).await?;
    let mut body = Vec::new();
    while let Some(piece) = response.next_piece().await? {
        assert!(!piece.is_empty(), "no empty pieces");
        body.extend_from_slice(&piece);
    }
    Ok((head, body, response.into_reusable().is_some()))
}

async fn each_step(wire: &str, head_only: bool) -> (ResponseHead, Vec<u8>, bool) {
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
    assert_eq!(head.status(), 200);
    assert_eq!(head.field(b"content-type"), Some(&b"application/json"[..]));
    assert_eq!(head.field(b"content-length"), Some(&b"5"[..]));
    for gone in ["connection", "keep-alive", "x-hop"] {
        assert_eq!(head.field(gone.as_bytes()), None, "{gone}");
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
    assert_eq!(head.field(b"transfer-encoding"), Some(&b"chunked"[..]));
    assert_eq!(head.field(b"content-length"), None, "never both framings");
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
    assert_eq!(head.status(), 204);
    assert!(body.is_empty());
    assert!(reusable);
    let (head, body, reusable) =
        each_step("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).await;
    assert_eq!(
        head.field(b"content-length"),
        Some(&b"10"[..]),
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
                Err(ResponseError::Malformed(_) | ResponseError::Body(_))
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

/// A deadline no test reaches.
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}
