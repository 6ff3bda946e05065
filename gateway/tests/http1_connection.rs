//! The predict listener's HTTP/1 wire behaviour, pinned down with raw bytes
//! on a plain `std::net::TcpStream` (`testkit::raw`, `testkit::wire`):
//! each test starts the real gateway binary in front of the recording
//! replica and checks what the client got as well as what reached the
//! replica. Every read and write on the client has a timeout, so a gateway
//! that hangs fails the test instead of blocking it.
//!
//! This file: pipelining, connection persistence, `Expect: 100-continue`,
//! refusals, HEAD, bodies and heads in pieces, absolute-form request targets;
//! `http1_wire.rs`: framing, malformed and over-large heads, limits.

use bytes::Bytes;

use testkit::replica::Behaviour;
use testkit::wire::*;

// ---------------------------------------------------------------------------
// Pipelining and persistence
// ---------------------------------------------------------------------------

/// RFC 9112 section 9.3.2: pipelined requests are answered in order.
#[test]
fn two_predicts_pipelined_in_one_write_are_both_answered_in_order() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let mut both = predict(b"first");
    both.extend(predict(b"second!"));
    client.send(&both);
    let first = client.response("the first pipelined predict");
    assert_echoed(&first, b"first", "the first pipelined predict");
    let second = client.response("the second pipelined predict");
    assert_echoed(&second, b"second!", "the second pipelined predict");
    assert_eq!(
        setup.predict_bodies(),
        [b"first".to_vec(), b"second!".to_vec()]
    );
}

#[test]
fn a_healthz_pipelined_before_a_predict_is_answered_then_the_predict() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let mut both = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec();
    both.extend(predict(b"after healthz"));
    client.send(&both);
    let health = client.response("the pipelined /healthz");
    assert_status(&health, 200, "the pipelined /healthz");
    assert_eq!(
        String::from_utf8_lossy(&health.body),
        r#"{"status":"ok"}"#,
        "the /healthz body"
    );
    let resp = client.response("the predict pipelined after /healthz");
    assert_echoed(
        &resp,
        b"after healthz",
        "the predict pipelined after /healthz",
    );
    assert_eq!(setup.predict_bodies(), [b"after healthz".to_vec()]);
}

/// `POST` predict over HTTP/1.0 with a Content-Length and `extra` headers.
fn predict_1_0(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {PREDICT} HTTP/1.0\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: {}\r\n{extra}\r\n",
        auth(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// RFC 9112 section 9.3: HTTP/1.0 is not persistent unless asked to be.
#[test]
fn http_1_0_without_a_connection_header_is_closed_after_the_response() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_1_0("", b"one-oh"));
    let resp = client.response("an HTTP/1.0 predict");
    assert_echoed(&resp, b"one-oh", "an HTTP/1.0 predict");
    client.assert_closed("after an HTTP/1.0 request without Connection");
    assert_eq!(setup.predict_bodies(), [b"one-oh".to_vec()]);
}

#[test]
fn http_1_0_with_keep_alive_stays_open_for_a_second_request() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    for body in [&b"first"[..], b"second"] {
        client.send(&predict_1_0("Connection: keep-alive\r\n", body));
        let resp = client.response("an HTTP/1.0 keep-alive predict");
        assert_echoed(&resp, body, "an HTTP/1.0 keep-alive predict");
    }
    assert_eq!(
        setup.predict_bodies(),
        [b"first".to_vec(), b"second".to_vec()]
    );
}

#[test]
fn http_1_1_with_connection_close_is_closed_after_the_response() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Connection: close\r\nContent-Length: 5\r\n",
        b"close",
    ));
    let resp = client.response("a predict with Connection: close");
    assert_echoed(&resp, b"close", "a predict with Connection: close");
    client.assert_closed("after Connection: close");
}

// ---------------------------------------------------------------------------
// Expect, refusals, HEAD, bodies in pieces
// ---------------------------------------------------------------------------

/// The client holds its body until `100 Continue`, then gets the final 200.
#[test]
fn expect_100_continue_gets_100_before_the_body_then_200() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with(
        "Content-Length: 8\r\nExpect: 100-continue\r\n",
        b"",
    ));
    let interim = client
        .try_response(false)
        .unwrap_or_else(|e| panic!("100 Continue before the body was sent: {e}"));
    assert_status(&interim, 100, "the answer to the head alone");
    assert!(
        interim.line.starts_with("HTTP/1.1 100"),
        "the interim status line {:?}",
        interim.line
    );
    client.send(b"continue");
    let resp = client.response("the final response");
    assert_echoed(&resp, b"continue", "the final response");
    assert_eq!(setup.predict_bodies(), [b"continue".to_vec()]);
}

/// A refusal without a request body leaves the connection usable: the
/// requests that follow on it are answered.
fn assert_bodiless_refusals_keep_the_connection(
    setup: &Setup,
    status: u16,
    requests: [(&str, String); 2],
) {
    let mut client = setup.connect();
    for (what, request) in requests {
        client.send(request.as_bytes());
        let resp = client.response(what);
        assert_json_error(&resp, status, what);
    }
    client.send(&predict(b"still usable"));
    let resp = client.response("a predict after the refusals, on the same connection");
    assert_echoed(
        &resp,
        b"still usable",
        "a predict after the refusals, on the same connection",
    );
    assert_eq!(setup.predict_bodies(), [b"still usable".to_vec()]);
}

#[test]
fn an_unknown_model_is_a_404_json_error_and_a_bodiless_one_keeps_the_connection() {
    let setup = Setup::echo();
    let key = auth();
    assert_bodiless_refusals_keep_the_connection(
        &setup,
        404,
        [
            (
                "GET of an unknown model",
                format!(
                    "GET /models/nope/production/sync/v1/info HTTP/1.1\r\nHost: gw\r\nAuthorization: {key}\r\n\r\n"
                ),
            ),
            (
                "POST with Content-Length: 0 to an unknown model",
                format!(
                    "POST /models/nope/production/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: {key}\r\nContent-Length: 0\r\n\r\n"
                ),
            ),
        ],
    );
}

#[test]
fn a_missing_key_is_a_401_json_error_and_a_bodiless_one_keeps_the_connection() {
    let setup = Setup::echo();
    assert_bodiless_refusals_keep_the_connection(
        &setup,
        401,
        [
            (
                "GET without a key",
                format!("GET {SYNC_INFO} HTTP/1.1\r\nHost: gw\r\n\r\n"),
            ),
            (
                "POST with Content-Length: 0 without a key",
                format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"),
            ),
        ],
    );
}

/// Refusals of requests that carry a body are JSON errors too.
#[test]
fn refusals_of_requests_with_a_body_are_json_errors() {
    let setup = Setup::echo();
    let cases = [
        (
            "POST with a body to an unknown model",
            format!(
                "POST /models/nope/production/predict HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
                auth()
            ),
            404,
        ),
        (
            "POST with a body without a key",
            format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"),
            401,
        ),
    ];
    for (what, request, status) in cases {
        let mut client = setup.connect();
        client.send(request.as_bytes());
        let resp = client.response(what);
        assert_json_error(&resp, status, what);
    }
    setup.assert_replica_saw_nothing("refused requests");
}

/// A refusal sent before the request body has all arrived closes the
/// connection, and says so in its head; one whose body is all here skips
/// it and keeps the connection.
#[test]
fn a_refusal_before_the_body_arrived_says_connection_close() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(
        format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nhello")
            .as_bytes(),
    );
    let resp = client.response("a refusal with 95 body bytes still to come");
    assert_json_error(&resp, 401, "a refusal with the body still to come");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "{:?}",
        resp.headers
    );
    client.assert_closed("after a refusal with the body still to come");

    let mut client = setup.connect();
    client.send(
        format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello").as_bytes(),
    );
    let resp = client.response("a refusal with its body all here");
    assert_json_error(&resp, 401, "a refusal with its body all here");
    assert_eq!(
        resp.header("connection"),
        Some("keep-alive"),
        "{:?}",
        resp.headers
    );
    client.send(&predict(b"next"));
    assert_echoed(
        &client.response("the next request"),
        b"next",
        "the next request",
    );
}

/// HEAD on a passthrough path: the replica's status and Content-Length, no
/// body, and the next exchange on the connection is not thrown off.
#[test]
fn head_on_a_sync_path_gets_the_headers_without_a_body() {
    let body = Bytes::from_static(b"replica info: 29 bytes long!\n");
    let setup = Setup::start(Behaviour::Fixed(body.clone()));
    let mut client = setup.connect();
    let request = |method: &str| {
        format!(
            "{method} {SYNC_INFO} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n\r\n",
            auth()
        )
    };
    client.send(request("HEAD").as_bytes());
    let head = client
        .try_response(true)
        .unwrap_or_else(|e| panic!("the HEAD: {e}"));
    assert_status(&head, 200, "the HEAD");
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str()),
        "the replica's Content-Length"
    );
    assert_eq!(head.header("x-deployment-id"), Some("d1"));
    client.send(request("GET").as_bytes());
    let get = client.response("the GET after the HEAD");
    assert_status(&get, 200, "the GET after the HEAD");
    assert_eq!(get.body, body, "the GET's body, right after the HEAD");
    let seen: Vec<(String, String)> = setup
        .received()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    assert_eq!(
        seen,
        [
            ("HEAD".to_owned(), "/v1/info".to_owned()),
            ("GET".to_owned(), "/v1/info".to_owned())
        ]
    );
}

/// A chunked body cut at awkward places (inside a size line, between CR and
/// LF, inside a chunk's data, inside the last chunk) and written piece by
/// piece reaches the replica decoded and whole.
#[test]
fn a_chunked_body_split_over_several_writes_reaches_the_replica_whole() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    client.send(&predict_with("Transfer-Encoding: chunked\r\n", b""));
    let pieces: [&[u8]; 9] = [
        b"1",
        b"0\r",
        b"\nsixteen ",
        b"bytes!!!\r\n",
        b"3;ext=1\r\nabc",
        b"\r\n",
        b"0\r\n",
        b"X-Trailer: t\r\n",
        b"\r\n",
    ];
    for piece in pieces {
        client.send(piece);
    }
    let resp = client.response("the chunked body written in pieces");
    assert_echoed(
        &resp,
        b"sixteen bytes!!!abc",
        "the chunked body written in pieces",
    );
    assert_eq!(setup.predict_bodies(), [b"sixteen bytes!!!abc".to_vec()]);
}

// ---------------------------------------------------------------------------
// Request targets and heads in pieces
// ---------------------------------------------------------------------------

/// An absolute-form target (RFC 9112 section 3.2.2) routes like its path
/// when the Host agrees with its authority.
#[test]
fn an_absolute_form_target_with_a_matching_host_is_routed() {
    let setup = Setup::echo();
    let authority = setup.addr().to_string();
    let request = format!(
        "POST http://{authority}{PREDICT} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\nContent-Length: 8\r\n\r\nabsolute",
        auth()
    );
    let mut client = setup.connect();
    client.send(request.as_bytes());
    let resp = client.response("an absolute-form target");
    assert_echoed(&resp, b"absolute", "an absolute-form target");
    assert_eq!(setup.predict_bodies(), [b"absolute".to_vec()]);
}

/// A Host that differs from the absolute-form authority is ambiguous: 400.
#[test]
fn an_absolute_form_target_with_a_different_host_is_rejected_with_400() {
    let setup = Setup::echo();
    let request = format!(
        "POST http://{}{PREDICT} HTTP/1.1\r\nHost: other.example\r\nAuthorization: {}\r\nContent-Length: 8\r\n\r\nabsolute",
        setup.addr(),
        auth()
    );
    let mut client = setup.connect();
    client.send(request.as_bytes());
    let resp = client.response("an absolute-form target with another Host");
    assert_status(&resp, 400, "an absolute-form target with another Host");
    setup.assert_replica_saw_nothing("an absolute-form target with another Host");
}

/// The head arrives one byte per write: the parser resumes where it left
/// off each time.
#[test]
fn a_head_written_one_byte_at_a_time_is_answered() {
    let setup = Setup::echo();
    let mut client = setup.connect();
    let request = predict(b"bytewise");
    let head_len = request.len() - b"bytewise".len();
    for byte in &request[..head_len] {
        client.send(std::slice::from_ref(byte));
    }
    client.send(&request[head_len..]);
    let resp = client.response("the head written a byte at a time");
    assert_echoed(&resp, b"bytewise", "the head written a byte at a time");
    assert_eq!(setup.predict_bodies(), [b"bytewise".to_vec()]);
}
