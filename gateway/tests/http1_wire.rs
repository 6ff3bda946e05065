//! The predict listener's HTTP/1 wire behaviour, pinned down with raw bytes
//! on a plain `std::net::TcpStream` (`testkit::raw`, `testkit::wire`):
//! each test starts the real gateway binary in front of the recording
//! replica and checks what the client got as well as what reached the
//! replica. Every read and write on the client has a timeout, so a gateway
//! that hangs fails the test instead of blocking it.
//!
//! This file: request framing (Content-Length, Transfer-Encoding and their
//! conflicts, RFC 9112 section 6), malformed and over-large heads, and the
//! limits set in `[server]`; `http1_connection.rs`: pipelining,
//! persistence, `Expect`, refusals, HEAD, bodies and heads in pieces,
//! request targets.

use testkit::replica::Behaviour;
use testkit::wire::*;

// ---------------------------------------------------------------------------
// Framing: Content-Length and Transfer-Encoding
// ---------------------------------------------------------------------------

/// Two framings in one request are the shape of request smuggling: refused
/// with 400 and the connection closed, as nginx and Envoy do (RFC 9112 6.1
/// would allow reading it as chunked).
#[test]
fn content_length_with_chunked_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with(
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            &chunked(&[b"hello", b" world"]),
        ),
        "Content-Length with Transfer-Encoding: chunked",
    );
}

/// Two keys in one request: which one counts would be a guess.
#[test]
fn two_authorization_headers_are_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with(
            &format!("Authorization: {}\r\nContent-Length: 2\r\n", auth()),
            b"{}",
        ),
        "two Authorization headers",
    );
}

/// The limits in `[server]` are the ones applied.
#[test]
fn configured_head_limits_apply() {
    let setup = Setup::start_with(
        "max_uri_bytes = 300\nmax_request_head_bytes = 2048",
        Behaviour::Echo,
    );
    let mut client = setup.connect();
    let path = format!("{PREDICT}?{}", "q".repeat(300));
    client.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_status(&client.response("a 330-byte URI"), 414, "a 330-byte URI");
    let mut client = setup.connect();
    let big = format!("X-Big: {}\r\n", "b".repeat(2048));
    client.send(&predict_with(&format!("{big}Content-Length: 2\r\n"), b"{}"));
    assert_status(&client.response("a 2 KiB field"), 431, "a 2 KiB field");
    setup.assert_replica_saw_nothing("refused heads");
    // Within the limits, the same gateway answers.
    let mut client = setup.connect();
    client.send(&predict(b"{}"));
    assert_echoed(
        &client.response("a small predict"),
        b"{}",
        "a small predict",
    );
}

/// A request target over `max_uri_bytes` (default 8 KiB) is 414.
#[test]
fn an_over_long_uri_is_refused_with_414() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let path = format!("{PREDICT}?{}", "q".repeat(9 * 1024));
    client.send(format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes());
    let resp = client.response("a 9 KiB URI");
    assert_status(&resp, 414, "a 9 KiB URI");
    setup.assert_replica_saw_nothing("a 9 KiB URI");
}

/// RFC 9110 section 8.6: a list of identical values is that one value.
#[test]
fn a_comma_list_of_identical_content_lengths_is_accepted_as_one() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with("Content-Length: 5, 5\r\n", b"hello"));
    let resp = client.response("Content-Length: 5, 5");
    assert_echoed(&resp, b"hello", "Content-Length: 5, 5");
    assert_eq!(setup.predict_bodies(), [b"hello".to_vec()]);
}

/// RFC 9110 section 8.6: repeated identical fields are that one value.
#[test]
fn repeated_identical_content_length_headers_are_accepted_as_one() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        b"hello",
    ));
    let resp = client.response("two Content-Length: 5");
    assert_echoed(&resp, b"hello", "two Content-Length: 5");
    assert_eq!(setup.predict_bodies(), [b"hello".to_vec()]);
}

/// RFC 9112 section 6.3: differing lengths make the framing invalid: 400,
/// the connection closed, nothing forwarded.
#[test]
fn a_comma_list_of_differing_content_lengths_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("Content-Length: 5, 6\r\n", b"hello"),
        "Content-Length: 5, 6",
    );
}

#[test]
fn repeated_differing_content_length_headers_are_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello"),
        "Content-Length: 5 and Content-Length: 6",
    );
}

/// Content-Length is 1*DIGIT: a sign, a hex prefix or inner space is
/// invalid framing (400, connection closed), not a number to guess at.
#[test]
fn a_non_numeric_content_length_is_rejected_with_400() {
    let setup = Setup::echo();
    let outcomes: Vec<(&str, Result<(), String>)> = ["+5", "-1", "0x5", "5 5"]
        .into_iter()
        .map(|value| {
            let request = predict_with(&format!("Content-Length: {value}\r\n"), b"hello");
            (value, rejected_and_closed(&setup, &request))
        })
        .collect();
    assert!(
        outcomes.iter().all(|(_, o)| o.is_ok()),
        "each value should be a 400 and a close: {outcomes:#?}"
    );
    setup.assert_replica_saw_nothing("non-numeric Content-Length");
}

/// RFC 9112 section 6.3: a Transfer-Encoding whose final coding is not
/// chunked cannot be framed by a server: 400 and close.
#[test]
fn a_transfer_encoding_without_final_chunked_is_rejected_with_400() {
    let setup = Setup::echo();
    let outcomes: Vec<(&str, Result<(), String>)> = [
        ("gzip", Vec::new()),
        ("chunked, gzip", chunked(&[b"hello"])),
    ]
    .into_iter()
    .map(|(coding, body)| {
        let request = predict_with(&format!("Transfer-Encoding: {coding}\r\n"), &body);
        (coding, rejected_and_closed(&setup, &request))
    })
    .collect();
    assert!(
        outcomes.iter().all(|(_, o)| o.is_ok()),
        "each coding should be a 400 and a close: {outcomes:#?}"
    );
    setup.assert_replica_saw_nothing("Transfer-Encoding without final chunked");
}

/// RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 request is
/// faulty framing: 400 and close.
#[test]
fn chunked_on_an_http_1_0_request_is_rejected_with_400() {
    let setup = Setup::echo();
    let mut request = format!(
        "POST {PREDICT} HTTP/1.0\r\nHost: gw\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        auth()
    )
    .into_bytes();
    request.extend(chunked(&[b"hello"]));
    assert_rejected_and_closed(&setup, &request, "HTTP/1.0 with Transfer-Encoding");
}

/// A chunk size line that is not hex is the client's fault: 400 (never a
/// 5xx), the connection closed, and the replica is not held to blame: the
/// next request, on a new connection, goes through.
#[test]
fn a_bad_chunk_size_line_is_a_400_and_the_replica_is_not_blamed() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Transfer-Encoding: chunked\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
    ));
    let resp = client.response("a bad chunk size line");
    assert_status(&resp, 400, "a bad chunk size line");
    client.assert_closed("after a bad chunk size line");

    let mut next = setup.connect();
    next.send(&predict(b"after"));
    let resp = next.response("the next request");
    assert_echoed(&resp, b"after", "the next request, on a new connection");
    assert_eq!(
        setup.predict_bodies(),
        [b"after".to_vec()],
        "only the good request reached the replica"
    );
}

// ---------------------------------------------------------------------------
// Malformed and over-large heads
// ---------------------------------------------------------------------------

/// RFC 9112 section 5.1: no whitespace between a field name and its colon.
#[test]
fn a_space_before_a_header_colon_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST {PREDICT} HTTP/1.1\r\nHost : gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
        auth()
    );
    assert_rejected_and_closed(&setup, request.as_bytes(), "Host : gw");
}

/// RFC 9112 section 5.2: obs-fold outside message/http is rejected.
#[test]
fn an_obs_fold_continuation_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("X-Folded: one\r\n two\r\nContent-Length: 5\r\n", b"hello"),
        "an obs-fold continuation line",
    );
}

#[test]
fn a_nul_in_a_header_value_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        &predict_with("X-Nul: a\0b\r\nContent-Length: 5\r\n", b"hello"),
        "a NUL in a header value",
    );
}

/// 11 bytes, shorter than the 24-byte h2c preface: the listener must judge
/// what it has instead of waiting for more bytes that never come.
#[test]
fn a_garbage_request_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(&setup, b"GARBAGE\r\n\r\n", "GARBAGE");
}

/// The same longer than the h2c preface, so that only the head parser is
/// judged.
#[test]
fn a_long_garbage_request_line_is_rejected_with_400() {
    let setup = Setup::echo();
    assert_rejected_and_closed(
        &setup,
        b"GARBAGE GARBAGE GARBAGE GARBAGE\r\n\r\n",
        "a long garbage request line",
    );
}

/// `HTTP/2.0` in a request line is not HTTP/1 (and not the h2c preface).
#[test]
fn an_http_2_0_request_line_on_an_http1_connection_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST {PREDICT} HTTP/2.0\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
        auth()
    );
    assert_rejected_and_closed(&setup, request.as_bytes(), "HTTP/2.0 request line");
}

/// A head far beyond any sane size is refused promptly with a 4xx (400 or
/// 431), whatever else happens: not a hang, not a 5xx.
fn assert_over_large_head_refused(setup: &Setup, request: &[u8], what: &str) {
    let mut client = setup.connect();
    // The gateway may refuse, and close, before it has read it all.
    let sent = client.try_send(request);
    let resp = client
        .try_response(false)
        .unwrap_or_else(|e| panic!("{what}: {e} (sending: {sent:?})"));
    assert!(
        resp.status == 400 || resp.status == 431,
        "{what}: expected 400 or 431, got {}",
        resp.describe()
    );
    setup.assert_replica_saw_nothing(what);
}

#[test]
fn a_200_kb_header_value_is_refused_with_a_4xx() {
    let setup = Setup::echo();
    let big = "a".repeat(200 * 1024);
    assert_over_large_head_refused(
        &setup,
        &predict_with(&format!("X-Big: {big}\r\nContent-Length: 5\r\n"), b"hello"),
        "a 200 KB header value",
    );
}

#[test]
fn three_hundred_header_fields_are_refused_with_a_4xx() {
    let setup = Setup::echo();
    let many: String = (0..300).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    assert_over_large_head_refused(
        &setup,
        &predict_with(&format!("{many}Content-Length: 5\r\n"), b"hello"),
        "300 header fields",
    );
}
