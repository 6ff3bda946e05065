//! The requests the cases are built of, beyond those of `testkit::wire`:
//! keyed and unkeyed requests to any target, the smuggled request, and
//! heads padded to an exact size.

use super::*;

pub(super) fn post_to(target: &str, body: &[u8]) -> Vec<u8> {
    keyed_request(
        &format!("POST {target} HTTP/1.1"),
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

pub(super) fn get(target: &str) -> Vec<u8> {
    keyed_request(&format!("GET {target} HTTP/1.1"), "", b"")
}

/// A bodiless predict (`Content-Length: 0`): refusals of it keep the
/// connection.
pub(super) fn bodiless(line: &str, extra: &str) -> Vec<u8> {
    keyed_request(line, &format!("{extra}Content-Length: 0\r\n"), b"")
}

/// The predict request line.
pub(super) fn predict_line(version: &str) -> String {
    format!("POST {PREDICT} {version}")
}

/// A predict with its own `Authorization` lines (or none).
pub(super) fn predict_authorized(authorization: &str, body: &[u8]) -> Vec<u8> {
    unkeyed_request(
        &predict_line("HTTP/1.1"),
        &format!("{authorization}Content-Length: {}\r\n", body.len()),
        body,
    )
}

/// A complete, keyed request to a `/sync/v1/...` route whose target, headers
/// and body carry [`MARKER`]: the request a smuggling attempt hides.
pub(super) fn smuggled() -> Vec<u8> {
    keyed_request(
        &format!("POST {SYNC}/v1/{MARKER} HTTP/1.1"),
        &format!("X-Marker: {MARKER}\r\nContent-Length: {}\r\n", MARKER.len()),
        MARKER.as_bytes(),
    )
}

pub(super) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `n` header fields `X-F-i: i`.
pub(super) fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F-{i}: {i}\r\n")).collect()
}

/// A keyed predict of `body` whose head is exactly `size` bytes (request
/// line to the blank line), padded with fields of at most 10 000 bytes (the
/// recording replica reads lines of up to 16 KiB).
pub(super) fn predict_with_head_of(size: usize, body: &[u8]) -> Vec<u8> {
    let start = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: {}\r\n",
        auth(),
        body.len()
    );
    // Every pad field is `X-Pad-NN: ` (10 bytes), its value and CRLF.
    const OVERHEAD: usize = 12;
    let mut pads = String::new();
    let mut left = size - start.len() - 2;
    let mut i = 0;
    while left > 0 {
        let value = if left <= 10_000 + OVERHEAD {
            left - OVERHEAD
        } else {
            10_000
        };
        pads.push_str(&format!("X-Pad-{i:02}: {}\r\n", "p".repeat(value)));
        left -= value + OVERHEAD;
        i += 1;
    }
    let mut out = format!("{start}{pads}\r\n").into_bytes();
    assert_eq!(out.len(), size, "the padded head's size");
    out.extend_from_slice(body);
    out
}
