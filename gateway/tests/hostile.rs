//! A corpus of hostile requests, sent as raw bytes to the real gateway in
//! front of the recording replica, one table: each case is a name (with the
//! reason for its expectation where the right answer is a judgement call),
//! the exact bytes sent (in pieces where a client is slow), the responses it
//! must get in order (none: the connection just closes), and whether the
//! connection must then close or stay usable (a `GET /healthz` probe must
//! then get its own answer, so that no byte of a refused or smuggled request
//! was taken for a request). Every case also says what the replica must have
//! received from it, and after every case the replica's record is searched
//! for what must never reach a replica: the client's key, the gateway's own
//! headers, two framings, any byte of a smuggled request, `/info`,
//! `/metrics` or `/health` through `/sync/`.
//!
//! The cases run one after another and every failure is collected: the test
//! reports them all at once. No case asserts on time: slow clients are
//! answered by the gateway's timeouts (set low in `[server]`), and the raw
//! client waits for the answer, or for the close.

mod support;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::raw::{Client, IO_TIMEOUT, Response};
use support::replica::{Behaviour, Received};
use support::wire::*;

/// The main gateway: a small body limit, and head and body timeouts short
/// enough for slow clients to be answered within the raw client's waits.
/// The keep-alive timeout stays at its default (60 s), so that a connection
/// that must close is seen closing because of the case, not of idleness.
const MAIN_SERVER: &str =
    "max_request_body_bytes = 1000\nclient_header_timeout_secs = 1\nclient_body_timeout_secs = 1";
/// A second gateway for the idle keep-alive cases.
const IDLE_SERVER: &str = "keepalive_timeout_secs = 1";
const BODY_LIMIT: usize = 1000;
const MAX_URI: usize = 8 * 1024;
const MAX_HEAD: usize = 64 * 1024;
/// How long a trickling client waits for an answer before its next byte.
const TRICKLE_PAUSE: Duration = Duration::from_millis(250);
/// Sent on every connection that must stay usable: its answer must be the
/// next response.
const PROBE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
/// In every smuggled request: never to be seen at the replica.
const MARKER: &str = "SMUGGLED";
const SYNC: &str = "/models/m1/production/sync";

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Smuggling,
    Sizes,
    Slow,
    Pipelining,
    Paths,
    Auth,
    Methods,
    Versions,
}

const CATEGORIES: [Category; 8] = [
    Category::Smuggling,
    Category::Sizes,
    Category::Slow,
    Category::Pipelining,
    Category::Paths,
    Category::Auth,
    Category::Methods,
    Category::Versions,
];

/// Which gateway a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gw {
    Main,
    /// `keepalive_timeout_secs = 1`.
    Idle,
}

#[derive(Debug)]
enum Step {
    /// Written whole (a write the gateway refuses by closing is noted, and
    /// nothing more is sent).
    Send(Vec<u8>),
    /// Written a byte at a time, each after waiting [`TRICKLE_PAUSE`] for
    /// an answer: stops as soon as one begins.
    Trickle(Vec<u8>),
    /// The next response has this status (and this header, if given).
    Expect {
        status: u16,
        header: Option<(&'static str, &'static str)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The connection takes another request: the probe is answered.
    Open,
    /// The gateway closes the connection, with nothing more sent.
    Closed,
}

/// One request the replica received, as the cases state them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

impl Seen {
    fn of(r: &Received) -> Self {
        Self {
            method: r.method.clone(),
            target: r.target.clone(),
            body: r.body.clone(),
        }
    }

    fn describe(seen: &[Seen]) -> String {
        if seen.is_empty() {
            return "nothing".to_owned();
        }
        seen.iter()
            .map(|s| {
                format!(
                    "{} {} {:?}",
                    s.method,
                    escaped(s.target.as_bytes(), 80),
                    escaped(&s.body, 60)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug)]
struct Case {
    category: Category,
    name: String,
    gw: Gw,
    steps: Vec<Step>,
    end: End,
    /// What the replica receives from this case, in order.
    reaches: Vec<Seen>,
}

fn case(category: Category, name: &str) -> Case {
    Case {
        category,
        name: name.to_owned(),
        gw: Gw::Main,
        steps: Vec::new(),
        end: End::Closed,
        reaches: Vec::new(),
    }
}

impl Case {
    fn send(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Send(bytes.into()));
        self
    }

    fn trickle(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Trickle(bytes.into()));
        self
    }

    fn expect(mut self, status: u16) -> Self {
        self.steps.push(Step::Expect {
            status,
            header: None,
        });
        self
    }

    fn expect_with(mut self, status: u16, name: &'static str, value: &'static str) -> Self {
        self.steps.push(Step::Expect {
            status,
            header: Some((name, value)),
        });
        self
    }

    fn open(mut self) -> Self {
        self.end = End::Open;
        self
    }

    fn closed(mut self) -> Self {
        self.end = End::Closed;
        self
    }

    fn idle_gateway(mut self) -> Self {
        self.gw = Gw::Idle;
        self
    }

    fn reaches(mut self, method: &str, target: &str, body: &[u8]) -> Self {
        self.reaches.push(Seen {
            method: method.to_owned(),
            target: target.to_owned(),
            body: body.to_vec(),
        });
        self
    }

    /// A predict whose body reaches the replica.
    fn predicts(self, body: &[u8]) -> Self {
        self.reaches("POST", "/predict", body)
    }

    /// Everything the case sends, for failure messages.
    fn sent(&self) -> Vec<u8> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) | Step::Trickle(b) => Some(b.as_slice()),
                Step::Expect { .. } => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    fn describe(&self) -> String {
        let expected: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Expect { status, .. } => Some(status.to_string()),
                _ => None,
            })
            .collect();
        format!(
            "[{:?}] {}\n    sent: {}\n    expected: {} then {}",
            self.category,
            self.name,
            escaped(&self.sent(), 300),
            if expected.is_empty() {
                "no response".to_owned()
            } else {
                expected.join(", ")
            },
            match self.end {
                End::Open => "the connection kept",
                End::Closed => "the connection closed",
            }
        )
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn post_to(target: &str, body: &[u8]) -> Vec<u8> {
    keyed_request(
        &format!("POST {target} HTTP/1.1"),
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

fn get(target: &str) -> Vec<u8> {
    keyed_request(&format!("GET {target} HTTP/1.1"), "", b"")
}

/// A bodiless predict (`Content-Length: 0`): refusals of it keep the
/// connection.
fn bodiless(line: &str, extra: &str) -> Vec<u8> {
    keyed_request(line, &format!("{extra}Content-Length: 0\r\n"), b"")
}

/// The predict request line.
fn predict_line(version: &str) -> String {
    format!("POST {PREDICT} {version}")
}

/// A predict with its own `Authorization` lines (or none).
fn predict_authorized(authorization: &str, body: &[u8]) -> Vec<u8> {
    unkeyed_request(
        &predict_line("HTTP/1.1"),
        &format!("{authorization}Content-Length: {}\r\n", body.len()),
        body,
    )
}

/// A complete, keyed request to a `/sync/v1/...` route whose target, headers
/// and body carry [`MARKER`]: the request a smuggling attempt hides.
fn smuggled() -> Vec<u8> {
    keyed_request(
        &format!("POST {SYNC}/v1/{MARKER} HTTP/1.1"),
        &format!("X-Marker: {MARKER}\r\nContent-Length: {}\r\n", MARKER.len()),
        MARKER.as_bytes(),
    )
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `n` header fields `X-F-i: i`.
fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F-{i}: {i}\r\n")).collect()
}

/// A keyed predict of `body` whose head is exactly `size` bytes (request
/// line to the blank line), padded with fields of at most 10 000 bytes (the
/// recording replica reads lines of up to 16 KiB).
fn predict_with_head_of(size: usize, body: &[u8]) -> Vec<u8> {
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

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    smuggling(&mut cases);
    sizes(&mut cases);
    slow(&mut cases);
    pipelining(&mut cases);
    paths(&mut cases);
    authorization(&mut cases);
    methods(&mut cases);
    versions(&mut cases);
    cases
}

fn smuggling(cases: &mut Vec<Case>) {
    use Category::Smuggling as S;
    let te = |coding: &str| format!("Transfer-Encoding: {coding}\r\n");
    let hello = chunked(&[b"hello"]);

    // Two framings: refused, never read either way (README; nginx and
    // Envoy refuse too, though RFC 9112 6.1 would allow chunked-and-close).
    let cl_te_body = cat(&[b"0\r\n\r\n", &smuggled()]);
    cases.push(
        case(
            S,
            "CL.TE: Content-Length then Transfer-Encoding: chunked -> 400",
        )
        .send(predict_with(
            &format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_te_body.len()
            ),
            &cl_te_body,
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "TE.CL: Transfer-Encoding: chunked then Content-Length -> 400",
        )
        .send(predict_with(
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            &chunked(&[&smuggled()]),
        ))
        .expect(400)
        .closed(),
    );
    for (what, coding) in [
        ("xchunked", "xchunked"),
        ("identity", "identity"),
        ("a vertical tab before chunked", "\x0bchunked"),
    ] {
        cases.push(
            case(
                S,
                &format!("Content-Length with Transfer-Encoding: {what} -> 400"),
            )
            .send(predict_with(
                &format!("Content-Length: {}\r\n{}", cl_te_body.len(), te(coding)),
                &cl_te_body,
            ))
            .expect(400)
            .closed(),
        );
    }
    cases.push(
        case(
            S,
            "Content-Length with a Transfer-Encoding line hidden as an obs-fold continuation -> 400",
        )
        .send(predict_with(
            &format!(
                "Content-Length: {}\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n",
                cl_te_body.len()
            ),
            &cl_te_body,
        ))
        .expect(400)
        .closed(),
    );

    // Content-Length values.
    cases.push(
        case(
            S,
            "Content-Length: 5, 5 is one length (RFC 9110 8.6): delivered intact",
        )
        .send(predict_with("Content-Length: 5, 5\r\n", b"hello"))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            S,
            "two Content-Length: 5 lines are one length: delivered intact",
        )
        .send(predict_with(
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    let full = vec![b'n'; BODY_LIMIT];
    cases.push(
        case(
            S,
            "Content-Length: 1000, 1000 at the 1000-byte limit: delivered intact (H3-1)",
        )
        .send(predict_with("Content-Length: 1000, 1000\r\n", &full))
        .expect(200)
        .open()
        .predicts(&full),
    );
    cases.push(
        case(
            S,
            "Content-Length: 2000, 2000 over the 1000-byte limit: 413 at once (H3-2)",
        )
        .send(predict_with(
            "Content-Length: 2000, 2000\r\n",
            &[b'n'; 2000],
        ))
        .expect(413)
        .closed(),
    );
    cases.push(
        case(S, "Content-Length: 5, 6 -> 400")
            .send(predict_with("Content-Length: 5, 6\r\n", b"hello!"))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(S, "Content-Length: 5 and Content-Length: 6 lines -> 400")
            .send(predict_with(
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                b"hello!",
            ))
            .expect(400)
            .closed(),
    );
    for value in [
        "+5",
        "-1",
        "0x5",
        "5 5",
        "5,",
        "",
        "1e3",
        // 20 digits: beyond u64.
        "99999999999999999999",
    ] {
        cases.push(
            case(
                S,
                &format!("Content-Length: {value:?} is not 1*DIGIT -> 400"),
            )
            .send(predict_with(
                &format!("Content-Length: {value}\r\n"),
                b"hello",
            ))
            .expect(400)
            .closed(),
        );
    }
    cases.push(
        case(
            S,
            "Content-Length: 9999999999999999999 (19 digits, fits u64) is over the limit: 413, declared",
        )
        .send(predict_with(
            "Content-Length: 9999999999999999999\r\n",
            b"hello",
        ))
        .expect(413)
        .closed(),
    );
    cases.push(
        case(S, "Content-Length: 005 is still 1*DIGIT: delivered")
            .send(predict_with("Content-Length: 005\r\n", b"hello"))
            .expect(200)
            .open()
            .predicts(b"hello"),
    );

    // Transfer-Encoding values.
    for coding in ["chunked, identity", "identity", "xchunked", "chunked, gzip"] {
        cases.push(
            case(
                S,
                &format!("Transfer-Encoding: {coding} (chunked not final) -> 400"),
            )
            .send(predict_with(&te(coding), &hello))
            .expect(400)
            .closed(),
        );
    }
    cases.push(
        case(
            S,
            "Transfer-Encoding: chunked on two lines -> 400 (a coding applied twice, RFC 9112 6.1; recent nginx takes Transfer-Encoding as a unique field: 400)",
        )
        .send(predict_with(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            &hello,
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding: gzip, chunked -> 501: a coding the gateway does not apply (RFC 9112 6.1 SHOULD 501; nginx and Envoy 501); accepted, gzip bytes would reach the replica unmarked",
        )
        .send(predict_with(&te("gzip, chunked"), &hello))
        .expect(501)
        .closed(),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding:<TAB>chunked (a tab is OWS): a valid chunked body",
        )
        .send(predict_with("Transfer-Encoding:\tchunked\r\n", &hello))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding: Chunked (codings are case-insensitive): valid",
        )
        .send(predict_with(&te("Chunked"), &hello))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding value obs-folded onto the next line -> 400",
        )
        .send(predict_with("Transfer-Encoding:\r\n chunked\r\n", &hello))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding : chunked (space before the colon) -> 400",
        )
        .send(predict_with("Transfer-Encoding : chunked\r\n", &hello))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "Transfer-Encoding: chunked on HTTP/1.0 -> 400 (RFC 9112 6.1)",
        )
        .send(keyed_request(
            &predict_line("HTTP/1.0"),
            "Transfer-Encoding: chunked\r\n",
            &cat(&[b"0\r\n\r\n", &smuggled()]),
        ))
        .expect(400)
        .closed(),
    );

    // Chunk framing.
    cases.push(
        case(S, "a chunk extension with BWS and a quoted value: valid")
            .send(predict_with(
                &te("chunked"),
                b"5 ;name=\"v\"\r\nhello\r\n0\r\n\r\n",
            ))
            .expect(200)
            .open()
            .predicts(b"hello"),
    );
    cases.push(
        case(
            S,
            "a lone LF inside a chunk extension -> 400 (chunk-ext has no CTLs; nginx ends the line at that LF, so accepting it lets a front proxy frame the body differently)",
        )
        .send(predict_with(
            &te("chunked"),
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "bare LF ending chunk-size lines -> 400 at once (RFC 9112 7.1 wants CRLF there, and 2.2's bare-LF leniency covers only the head; nginx accepts, a known chunked desync vector): neither accepted nor held until the body timeout",
        )
        .send(predict_with(&te("chunked"), b"5\nhello\n0\n\n"))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(S, "chunk data followed by a bare LF -> 400")
            .send(predict_with(&te("chunked"), b"5\r\nhello\n0\r\n\r\n"))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(S, "a chunk size with a leading space -> 400")
            .send(predict_with(&te("chunked"), b" 5\r\nhello\r\n0\r\n\r\n"))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(S, "a chunk size of 0x5 -> 400")
            .send(predict_with(&te("chunked"), b"0x5\r\nhello\r\n0\r\n\r\n"))
            .expect(400)
            .closed(),
    );

    // Header syntax.
    for (what, field) in [
        ("an obs-fold continuation line", "X-Folded: one\r\n two\r\n"),
        (
            "an obs-fold continuation line starting with a tab",
            "X-Folded: one\r\n\ttwo\r\n",
        ),
        ("a NUL in a header value", "X-Nul: a\0b\r\n"),
        ("a bare CR in a header value", "X-Cr: a\rb\r\n"),
        ("a control byte 0x01 in a header value", "X-Ctl: a\x01b\r\n"),
        ("a space inside a header name", "X A: b\r\n"),
        ("a space before a header's colon", "X-A : b\r\n"),
    ] {
        cases.push(
            case(S, &format!("{what} -> 400"))
                .send(predict_with(
                    &format!("{field}Content-Length: 5\r\n"),
                    b"hello",
                ))
                .expect(400)
                .closed(),
        );
    }
    cases.push(
        case(S, "a NUL in the request target -> 400")
            .send(keyed_request(
                &format!("POST {PREDICT}\0 HTTP/1.1"),
                "Content-Length: 5\r\n",
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(
            S,
            "bare LF line endings in the head: accepted (RFC 9112 2.2 MAY; nginx accepts), the replica gets a CRLF head",
        )
        .send(
            format!(
                "POST {PREDICT} HTTP/1.1\nHost: gw\nAuthorization: {}\nContent-Length: 5\n\nhello",
                auth()
            )
            .into_bytes(),
        )
        .expect(200)
        .open()
        .predicts(b"hello"),
    );

    // Host.
    cases.push(
        case(
            S,
            "HTTP/1.1 without Host -> 400 (RFC 9112 3.2: a server MUST answer 400; nginx does)",
        )
        .send(
            format!(
                "POST {PREDICT} HTTP/1.1\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
                auth()
            )
            .into_bytes(),
        )
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            S,
            "HTTP/1.0 without Host is allowed: delivered, then closed",
        )
        .send(
            format!(
                "POST {PREDICT} HTTP/1.0\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
                auth()
            )
            .into_bytes(),
        )
        .expect(200)
        .closed()
        .predicts(b"hello"),
    );
    cases.push(
        case(S, "two Host headers -> 400")
            .send(predict_with(
                "Host: other\r\nContent-Length: 5\r\n",
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(S, "Host with userinfo (user@gw) -> 400")
            .send(
                format!(
                    "POST {PREDICT} HTTP/1.1\r\nHost: user@gw\r\nAuthorization: {}\r\nContent-Length: 5\r\n\r\nhello",
                    auth()
                )
                .into_bytes(),
            )
            .expect(400)
            .closed(),
    );
    cases.push(
        case(
            S,
            "an absolute-form target whose authority is not the Host -> 400",
        )
        .send(keyed_request(
            &format!("POST http://other.example{PREDICT} HTTP/1.1"),
            "Content-Length: 5\r\n",
            b"hello",
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(S, "an absolute-form target with userinfo -> 400")
            .send(keyed_request(
                &format!("POST http://user@gw{PREDICT} HTTP/1.1"),
                "Content-Length: 5\r\n",
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(
            S,
            "an absolute-form target whose authority is the Host: routed by its path",
        )
        .send(keyed_request(
            &format!("POST http://gw{PREDICT} HTTP/1.1"),
            "Content-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(S, "an absolute-form target with a non-http scheme -> 400")
            .send(keyed_request(
                &format!("POST ftp://gw{PREDICT} HTTP/1.1"),
                "Content-Length: 5\r\n",
                b"hello",
            ))
            .expect(400)
            .closed(),
    );

    // Underscore spellings of framing and gateway headers.
    cases.push(
        case(
            S,
            "Transfer_Encoding: chunked beside Content-Length: framed by Content-Length, and the underscore spelling not passed on (nginx drops names with `_`; Envoy's edge config rejects them)",
        )
        .send(predict_with(
            "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            S,
            "X_Forwarded_For and X_Deployment_Id: served, the underscore spellings of the gateway's headers not passed on (CGI/WSGI replicas fold `_` and `-` together)",
        )
        .send(predict_with(
            "X_Forwarded_For: 6.6.6.6\r\nX_Deployment_Id: evil\r\nContent-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
}

fn sizes(cases: &mut Vec<Case>) {
    use Category::Sizes as Z;
    let te = "Transfer-Encoding: chunked\r\n";
    let prefix = format!("{PREDICT}?");
    let target = |len: usize| format!("{prefix}{}", "q".repeat(len - prefix.len()));
    cases.push(
        case(
            Z,
            "a request target of 8193 bytes (max_uri_bytes 8 KiB) -> 414",
        )
        .send(post_to(&target(MAX_URI + 1), b"hello"))
        .expect(414)
        .closed(),
    );
    let at_limit = target(MAX_URI);
    let replica_target = at_limit.replacen(PREDICT, "/predict", 1);
    cases.push(
        case(Z, "a request target of exactly 8192 bytes: routed")
            .send(post_to(&at_limit, b"hello"))
            .expect(200)
            .open()
            .reaches("POST", &replica_target, b"hello"),
    );
    cases.push(
        case(
            Z,
            "a head of 65537 bytes (max_request_head_bytes 64 KiB) -> 431",
        )
        .send(predict_with_head_of(MAX_HEAD + 1, b"hello"))
        .expect(431)
        .closed(),
    );
    cases.push(
        case(Z, "a head of exactly 65536 bytes: delivered")
            .send(predict_with_head_of(MAX_HEAD, b"hello"))
            .expect(200)
            .open()
            .predicts(b"hello"),
    );
    cases.push(
        case(Z, "one 70 KiB header value -> 431")
            .send(predict_with(
                &format!("X-Big: {}\r\nContent-Length: 5\r\n", "b".repeat(70 * 1024)),
                b"hello",
            ))
            .expect(431)
            .closed(),
    );
    // Host, Authorization, Content-Length and 126 more: 129.
    cases.push(
        case(Z, "129 header fields (more than 128) -> 431")
            .send(predict_with(
                &format!("{}Content-Length: 5\r\n", fields(126)),
                b"hello",
            ))
            .expect(431)
            .closed(),
    );
    // Host, Content-Length and 126 more: 128. Refused for want of a key,
    // so that its many fields need not reach the replica.
    cases.push(
        case(
            Z,
            "exactly 128 header fields are within the limit: the head is read and judged (401, no key)",
        )
        .send(unkeyed_request(
            &predict_line("HTTP/1.1"),
            &format!("{}Content-Length: 0\r\n", fields(126)),
            b"",
        ))
        .expect(401)
        .open(),
    );
    cases.push(
        case(Z, "a declared body of 1001 bytes (limit 1000) -> 413")
            .send(predict(&[b'x'; BODY_LIMIT + 1]))
            .expect(413)
            .closed(),
    );
    cases.push(
        case(Z, "a body of exactly 1000 bytes: delivered")
            .send(predict(&[b'x'; BODY_LIMIT]))
            .expect(200)
            .open()
            .predicts(&[b'x'; BODY_LIMIT]),
    );
    cases.push(
        case(
            Z,
            "a declared body over the limit with Expect: 100-continue -> 413 without a 100",
        )
        .send(predict_with(
            "Content-Length: 1001\r\nExpect: 100-continue\r\n",
            b"",
        ))
        .expect(413)
        .closed(),
    );
    cases.push(
        case(
            Z,
            "a chunked body of 1001 bytes in two chunks -> 413 while it streams",
        )
        .send(predict_with(te, &chunked(&[&[b'c'; 600], &[b'c'; 401]])))
        .expect(413)
        .closed(),
    );
    cases.push(
        case(Z, "a chunked body of exactly 1000 bytes: delivered")
            .send(predict_with(te, &chunked(&[&[b'c'; 600], &[b'c'; 400]])))
            .expect(200)
            .open()
            .predicts(&[b'c'; BODY_LIMIT]),
    );
    cases.push(
        case(
            Z,
            "a chunk of 0xfffffffffffffff (2^60) bytes followed by 2000 -> 413 while it streams",
        )
        .send(predict_with(
            te,
            &cat(&[b"fffffffffffffff\r\n", &[b'c'; 2000]]),
        ))
        .expect(413)
        .closed(),
    );
    cases.push(
        case(
            Z,
            "a chunk-size line announcing 2^60 bytes, 10 sent -> 413 at once, the announced size being over the limit (nginx: 413 'client intended to send too large chunked body')",
        )
        .send(predict_with(te, b"fffffffffffffff\r\n0123456789"))
        .expect(413)
        .closed(),
    );
    for size in [
        "ffffffffffffffff",
        "10000000000000000",
        "00000000000000000005",
    ] {
        cases.push(
            case(
                Z,
                &format!(
                    "a chunk size of {} hex digits ({size}) -> 400 (overflow; nginx 400)",
                    size.len()
                ),
            )
            .send(predict_with(
                te,
                format!("{size}\r\nhello\r\n0\r\n\r\n").as_bytes(),
            ))
            .expect(400)
            .closed(),
        );
    }
    cases.push(
        case(
            Z,
            "a chunk extension of 5000 bytes (chunk lines up to 4 KiB) -> 400",
        )
        .send(predict_with(
            te,
            format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000)).as_bytes(),
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(Z, "a trailer line of 5000 bytes -> 400")
            .send(predict_with(
                te,
                format!("5\r\nhello\r\n0\r\nX-T: {}\r\n\r\n", "t".repeat(5000)).as_bytes(),
            ))
            .expect(400)
            .closed(),
    );
}

fn slow(cases: &mut Vec<Case>) {
    use Category::Slow as L;
    let head = String::from_utf8(predict_with("Content-Length: 5\r\n", b"")).expect("ASCII");
    cases.push(
        case(
            L,
            "a head that stops after Host -> 408 at client_header_timeout",
        )
        .send(format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\n"))
        .expect(408)
        .closed(),
    );
    cases.push(
        case(L, "a head that stops inside the request line -> 408")
            .send("POST /models/m1/produ")
            .expect(408)
            .closed(),
    );
    cases.push(
        case(
            L,
            "a head trickled a byte per 250 ms (each read within the timeout) -> 408: the head timeout bounds the whole head, as nginx's client_header_timeout",
        )
        .trickle(head.clone())
        .expect(408)
        .closed(),
    );
    cases.push(
        case(
            L,
            "a head that stops after its first byte `P` (a prefix of the h2c preface) -> 408 at client_header_timeout, not held for the keep-alive timeout",
        )
        .send("P")
        .expect(408)
        .closed(),
    );
    cases.push(
        case(
            L,
            "a Content-Length body that stops -> 408 at client_body_timeout",
        )
        .send(predict_with("Content-Length: 10\r\n", b"only5"))
        .expect(408)
        .closed(),
    );
    cases.push(
        case(L, "a chunked body that stops inside a chunk -> 408")
            .send(predict_with(
                "Transfer-Encoding: chunked\r\n",
                b"a\r\nonly5",
            ))
            .expect(408)
            .closed(),
    );
    cases.push(
        case(
            L,
            "a chunked body that stops before the blank line ending it -> 408",
        )
        .send(predict_with(
            "Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\n",
        ))
        .expect(408)
        .closed(),
    );
    cases.push(
        case(L, "Expect: 100-continue, then no body -> 100, then 408")
            .send(predict_with(
                "Content-Length: 5\r\nExpect: 100-continue\r\n",
                b"",
            ))
            .expect(100)
            .expect(408)
            .closed(),
    );
    cases.push(
        case(
            L,
            "Expect: 100-continue answered: the body sent after the 100 is delivered",
        )
        .send(predict_with(
            "Content-Length: 5\r\nExpect: 100-continue\r\n",
            b"",
        ))
        .expect(100)
        .send("hello")
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            L,
            "a second head that stops, after a served request on the connection -> 200, then 408",
        )
        .send(cat(&[
            &predict(b"hello"),
            format!("POST {PREDICT} HTTP/1.1\r\nHost: gw\r\n").as_bytes(),
        ]))
        .expect(200)
        .expect(408)
        .closed()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            L,
            "a connection that sends nothing is closed at keepalive_timeout, silently (nginx: no 408 for an idle connection)",
        )
        .idle_gateway()
        .closed(),
    );
    cases.push(
        case(
            L,
            "a keep-alive connection left idle after its response is closed at keepalive_timeout",
        )
        .idle_gateway()
        .send(predict(b"hello"))
        .expect(200)
        .closed()
        .predicts(b"hello"),
    );
}

fn pipelining(cases: &mut Vec<Case>) {
    use Category::Pipelining as P;
    cases.push(
        case(P, "two predicts in one write: both answered, in order")
            .send(cat(&[&predict(b"first"), &predict(b"second")]))
            .expect(200)
            .expect(200)
            .open()
            .predicts(b"first")
            .predicts(b"second"),
    );
    cases.push(
        case(
            P,
            "/healthz, a predict and /healthz in one write: all answered in order",
        )
        .send(cat(&[PROBE, &predict(b"middle"), PROBE]))
        .expect(200)
        .expect(200)
        .expect(200)
        .open()
        .predicts(b"middle"),
    );
    cases.push(
        case(
            P,
            "empty lines between pipelined requests are ignored (RFC 9112 2.2)",
        )
        .send(cat(&[&predict(b"one"), b"\r\n\r\n", &predict(b"two")]))
        .expect(200)
        .expect(200)
        .open()
        .predicts(b"one")
        .predicts(b"two"),
    );
    cases.push(
        case(P, "a predict pipelined after a declared 413 is not served")
            .send(cat(&[&predict(&[b'x'; BODY_LIMIT + 1]), &smuggled()]))
            .expect(413)
            .closed(),
    );
    cases.push(
        case(P, "a predict pipelined after a chunked 413 is not served")
            .send(cat(&[
                &predict_with(
                    "Transfer-Encoding: chunked\r\n",
                    &chunked(&[&[b'c'; BODY_LIMIT + 1]]),
                ),
                &smuggled(),
            ]))
            .expect(413)
            .closed(),
    );
    cases.push(
        case(
            P,
            "a predict pipelined after a 400 (two Content-Lengths) is not served",
        )
        .send(cat(&[
            &predict_with("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            &smuggled(),
        ]))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            P,
            "a predict pipelined after a bad chunk (400) is not served",
        )
        .send(cat(&[
            &predict_with(
                "Transfer-Encoding: chunked\r\n",
                b"zz\r\nhello\r\n0\r\n\r\n",
            ),
            &smuggled(),
        ]))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            P,
            "a predict pipelined after Connection: close is not served",
        )
        .send(cat(&[
            &predict_with("Connection: close\r\nContent-Length: 5\r\n", b"close"),
            &smuggled(),
        ]))
        .expect(200)
        .closed()
        .predicts(b"close"),
    );
    cases.push(
        case(
            P,
            "a predict pipelined after an HTTP/1.0 request without keep-alive is not served",
        )
        .send(cat(&[
            &keyed_request(&predict_line("HTTP/1.0"), "Content-Length: 5\r\n", b"hello"),
            &smuggled(),
        ]))
        .expect(200)
        .closed()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            P,
            "a bodiless 401 keeps the connection: the pipelined predict is served",
        )
        .send(cat(&[
            &unkeyed_request(&predict_line("HTTP/1.1"), "Content-Length: 0\r\n", b""),
            &predict(b"after 401"),
        ]))
        .expect(401)
        .expect(200)
        .open()
        .predicts(b"after 401"),
    );
    cases.push(
        case(
            P,
            "a 405 keeps the connection: the pipelined predict is served",
        )
        .send(cat(&[&get(PREDICT), &predict(b"after 405")]))
        .expect(405)
        .expect(200)
        .open()
        .predicts(b"after 405"),
    );
    cases.push(
        case(
            P,
            "a 404 keeps the connection: the pipelined predict is served",
        )
        .send(cat(&[
            &get("/models/m1/production/nothing"),
            &predict(b"after 404"),
        ]))
        .expect(404)
        .expect(200)
        .open()
        .predicts(b"after 404"),
    );
    cases.push(
        case(
            P,
            "Content-Length 10 over a 5-byte body and a pipelined /healthz: the body takes 10 bytes, the rest is no request -> 200, then 400",
        )
        .send(cat(&[
            &predict_with("Content-Length: 10\r\n", b"hello"),
            PROBE,
        ]))
        .expect(200)
        .expect(400)
        .closed()
        .predicts(b"helloGET /"),
    );
    cases.push(
        case(
            P,
            "bytes after the body that are no request -> 200, then 400",
        )
        .send(cat(&[&predict(b"hello"), b"XYZ\r\n\r\n"]))
        .expect(200)
        .expect(400)
        .closed()
        .predicts(b"hello"),
    );
}

fn paths(cases: &mut Vec<Case>) {
    use Category::Paths as A;
    // Dot segments, doubled slashes and escapes are never resolved: a
    // target that is not a route as sent is a 404, never the route it
    // would resolve to.
    for target in [
        "/models/m1/production/predict/../sync/v1/x",
        "//models/m1/production/predict",
        "/models/m1//production/predict",
        "/models/m1%2Fproduction/predict",
        "/models/m1/production%2Fpredict",
        "/models/m1/production/%70redict",
        "/models/m1/production/PREDICT",
        "/models/M1/production/predict",
        "/models/m1/production/predict/",
        "/models/m1/./production/predict",
    ] {
        cases.push(
            case(A, &format!("POST {target} -> 404"))
                .send(bodiless(&format!("POST {target} HTTP/1.1"), ""))
                .expect(404)
                .open(),
        );
    }
    // The replica's own routes, however spelled, through /sync/ (M3).
    for route in [
        "/info",
        "/%69nfo",
        "/..%2finfo",
        "/INFO",
        "/info/",
        "/metrics",
        "/health/ready",
        "/Health/live",
        "/v1/../info",
        "/v1/%2e%2e/info",
        "/v1%2f..%2f..%2finfo",
        "//info",
        "/%2finfo",
        "/info?x=/v1/y",
    ] {
        cases.push(
            case(A, &format!("GET /sync{route} -> 404"))
                .send(get(&format!("{SYNC}{route}")))
                .expect(404)
                .open(),
        );
    }
    cases.push(
        case(A, "GET /sync (the replica's /, not listed) -> 404")
            .send(get(SYNC))
            .expect(404)
            .open(),
    );
    cases.push(
        case(A, "DELETE /sync/x (not under /v1) -> 404")
            .send(keyed_request(&format!("DELETE {SYNC}/x HTTP/1.1"), "", b""))
            .expect(404)
            .open(),
    );
    cases.push(
        case(A, "GET /sync/v1/x: passed through")
            .send(get(&format!("{SYNC}/v1/x")))
            .expect(200)
            .open()
            .reaches("GET", "/v1/x", b""),
    );
    cases.push(
        case(A, "GET /sync/v1: passed through")
            .send(get(&format!("{SYNC}/v1")))
            .expect(200)
            .open()
            .reaches("GET", "/v1", b""),
    );
    cases.push(
        case(A, "DELETE /sync/v1/x: any method passes through")
            .send(keyed_request(
                &format!("DELETE {SYNC}/v1/x HTTP/1.1"),
                "",
                b"",
            ))
            .expect(200)
            .open()
            .reaches("DELETE", "/v1/x", b""),
    );
    cases.push(
        case(
            A,
            "GET /sync/v1/x?next=/info&p=..%2f: the query passes untouched, the path decides",
        )
        .send(get(&format!("{SYNC}/v1/x?next=/info&p=..%2f")))
        .expect(200)
        .open()
        .reaches("GET", "/v1/x?next=/info&p=..%2f", b""),
    );
    cases.push(
        case(A, "POST predict?x=1: the query goes to /predict")
            .send(post_to(&format!("{PREDICT}?x=1"), b"hello"))
            .expect(200)
            .open()
            .reaches("POST", "/predict?x=1", b"hello"),
    );
    let with_host = |request: Vec<u8>| {
        String::from_utf8(request)
            .expect("ASCII")
            .replacen("Host: gw", "Host: model-m1.example", 1)
            .into_bytes()
    };
    let host_info = with_host(get("/production/sync/INFO"));
    cases.push(
        case(A, "Host model-m1.example with /production/sync/INFO -> 404")
            .send(host_info)
            .expect(404)
            .open(),
    );
    let host_and_path = with_host(bodiless(&predict_line("HTTP/1.1"), ""));
    cases.push(
        case(
            A,
            "Host model-m1.example names the model: /models/m1/... after it is no route -> 404",
        )
        .send(host_and_path)
        .expect(404)
        .open(),
    );
}

fn authorization(cases: &mut Vec<Case>) {
    use Category::Auth as K;
    let key = support::KEY;
    cases.push(
        case(
            K,
            "no key -> 401 with WWW-Authenticate: Api-Key; the connection kept",
        )
        .send(predict_authorized("", b""))
        .expect_with(401, "www-authenticate", "Api-Key")
        .open(),
    );
    for (what, value) in [
        ("a wrong key", "Api-Key wrong".to_owned()),
        ("an empty Authorization", String::new()),
        ("the scheme without a key", "Api-Key".to_owned()),
        ("Basic credentials", "Basic aWd3OmlndwoK".to_owned()),
        ("the key followed by junk", format!("Api-Key {key} x")),
        ("an unknown scheme with the key", format!("Token {key}")),
    ] {
        cases.push(
            case(K, &format!("{what} -> 401"))
                .send(predict_authorized(
                    &format!("Authorization: {value}\r\n"),
                    b"",
                ))
                .expect(401)
                .open(),
        );
    }
    cases.push(
        case(K, "the key in Proxy-Authorization only -> 401")
            .send(predict_authorized(
                &format!("Proxy-Authorization: Api-Key {key}\r\n"),
                b"",
            ))
            .expect(401)
            .open(),
    );
    cases.push(
        case(K, "the key in the query string only -> 401")
            .send(unkeyed_request(
                &format!("POST {PREDICT}?api_key={key} HTTP/1.1"),
                "Content-Length: 0\r\n",
                b"",
            ))
            .expect(401)
            .open(),
    );
    for scheme in ["Bearer", "Api-Key", "api-key", "BEARER", "bearer"] {
        cases.push(
            case(
                K,
                &format!("Authorization: {scheme} <key>: served (schemes are case-insensitive, RFC 9110 11.1)"),
            )
            .send(predict_authorized(
                &format!("Authorization: {scheme} {key}\r\n"),
                b"hello",
            ))
            .expect(200)
            .open()
            .predicts(b"hello"),
        );
    }
    cases.push(
        case(K, "two Authorization headers (the key and another) -> 400")
            .send(predict_authorized(
                &format!("Authorization: Api-Key {key}\r\nAuthorization: Api-Key other\r\n"),
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(K, "two identical Authorization headers -> 400")
            .send(predict_authorized(
                &format!("Authorization: Api-Key {key}\r\nAuthorization: Api-Key {key}\r\n"),
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(K, "a 1 MiB key -> 431 by the head limit")
            .send(predict_authorized(
                &format!("Authorization: Api-Key {}\r\n", "k".repeat(1024 * 1024)),
                b"hello",
            ))
            .expect(431)
            .closed(),
    );
    cases.push(
        case(
            K,
            "x-rollout-side from a key that is not admin-scoped -> 403",
        )
        .send(bodiless(
            &predict_line("HTTP/1.1"),
            "x-rollout-side: canary\r\n",
        ))
        .expect(403)
        .open(),
    );
    cases.push(
        case(K, "x-deployment-id from the client: served, not passed on")
            .send(predict_with(
                "X-Deployment-Id: evil\r\nContent-Length: 5\r\n",
                b"hello",
            ))
            .expect(200)
            .open()
            .predicts(b"hello"),
    );
}

fn methods(cases: &mut Vec<Case>) {
    use Category::Methods as M;
    for method in ["GET", "FOO", "post", "PRI", "CONNECT"] {
        cases.push(
            case(
                M,
                &format!(
                    "{method} on predict -> 405 with Allow: POST (methods are case-sensitive)"
                ),
            )
            .send(bodiless(&format!("{method} {PREDICT} HTTP/1.1"), ""))
            .expect_with(405, "allow", "POST")
            .open(),
        );
    }
    cases.push(
        case(
            M,
            "CONNECT gw:443 (authority-form) -> 400 and close: the gateway is no proxy and cannot route it (nginx refuses CONNECT with 405; any 4xx that serves nothing and closes will do: the gateway's 400 for a target it cannot route is kept)",
        )
        .send("CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n")
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            M,
            "PRI * HTTP/2.0 not followed by the rest of the h2c preface -> 400",
        )
        .send("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .expect(400)
        .closed(),
    );
    cases.push(
        case(M, "a method with a non-token byte (PO(ST) -> 400")
            .send(keyed_request(
                &format!("PO(ST {PREDICT} HTTP/1.1"),
                "Content-Length: 5\r\n",
                b"hello",
            ))
            .expect(400)
            .closed(),
    );
    cases.push(
        case(M, "OPTIONS * (asterisk-form) -> 400: no route (nginx 400)")
            .send("OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n")
            .expect(400)
            .closed(),
    );
}

fn versions(cases: &mut Vec<Case>) {
    use Category::Versions as V;
    cases.push(
        case(V, "HTTP/1.0 without keep-alive: served, then closed")
            .send(keyed_request(
                &predict_line("HTTP/1.0"),
                "Content-Length: 5\r\n",
                b"hello",
            ))
            .expect(200)
            .closed()
            .predicts(b"hello"),
    );
    cases.push(
        case(
            V,
            "HTTP/1.0 with Connection: keep-alive: served, the connection kept",
        )
        .send(keyed_request(
            &predict_line("HTTP/1.0"),
            "Connection: keep-alive\r\nContent-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
    cases.push(
        case(
            V,
            "HTTP/1.0 with Expect: 100-continue: no 100 (HTTP/1.0 has none), served",
        )
        .send(keyed_request(
            &predict_line("HTTP/1.0"),
            "Expect: 100-continue\r\nContent-Length: 5\r\n",
            b"hello",
        ))
        .expect(200)
        .closed()
        .predicts(b"hello"),
    );
    for (what, version) in [
        ("HTTP/2.0 in an HTTP/1 request line", "HTTP/2.0"),
        ("a lower-case http/1.1", "http/1.1"),
        ("HTTP/1 without a minor version", "HTTP/1"),
        ("HTTP/3.0", "HTTP/3.0"),
    ] {
        cases.push(
            case(V, &format!("{what} -> 400"))
                .send(keyed_request(
                    &predict_line(version),
                    "Content-Length: 5\r\n",
                    b"hello",
                ))
                .expect(400)
                .closed(),
        );
    }
    cases.push(
        case(
            V,
            "HTTP/0.9 style `GET /` (no version, no headers) -> 400: no version, no Host, no key (nginx still answers HTTP/0.9 headless, an obsolete form nothing here needs)",
        )
        .send("GET /\r\n")
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            V,
            "a space inside the request target -> 400 (never escaped and passed on)",
        )
        .send(keyed_request(
            &format!("POST {PREDICT} x HTTP/1.1"),
            "Content-Length: 5\r\n",
            b"hello",
        ))
        .expect(400)
        .closed(),
    );
    cases.push(
        case(
            V,
            "empty lines before the request line are ignored (RFC 9112 2.2 SHOULD)",
        )
        .send(cat(&[b"\r\n\r\n", &predict(b"hello")]))
        .expect(200)
        .open()
        .predicts(b"hello"),
    );
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/// Whether an answer (or a close) began within [`TRICKLE_PAUSE`].
fn answer_began(stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(TRICKLE_PAUSE))
        .expect("set a read timeout");
    let mut byte = [0u8; 1];
    let began = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
        ),
    };
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    began
}

/// What is wrong with `resp` as the answer `status` (and `header`).
fn judge(resp: &Response, status: u16, header: Option<(&str, &str)>) -> Option<String> {
    if resp.status != status {
        let fault = if resp.status >= 500 {
            " (a 5xx for a client's fault)"
        } else {
            ""
        };
        return Some(format!("expected {status}, got {}{fault}", resp.describe()));
    }
    if let Some((name, value)) = header
        && resp.header(name) != Some(value)
    {
        return Some(format!(
            "{status} without `{name}: {value}`: headers {:?}",
            resp.headers
        ));
    }
    if status >= 400 {
        let json: Option<serde_json::Value> = serde_json::from_slice(&resp.body).ok();
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(serde_json::Value::as_str);
        if error.is_none_or(str::is_empty) {
            return Some(format!(
                "{status} without a JSON error: {}",
                resp.describe()
            ));
        }
    }
    None
}

/// Runs `case` on a new connection: what went wrong, if anything, and how
/// many requests the replica received meanwhile.
fn run(setup: &Setup, case: &Case) -> (Vec<String>, usize) {
    let before = setup.received().len();
    let mut problems = Vec::new();
    let stream = TcpStream::connect(setup.addr()).expect("connect to the gateway");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");
    let mut writer = stream.try_clone().expect("a second handle on the socket");
    let mut client = Client::from_stream(stream);
    // A refused request may be closed on before all of it is written: said
    // in the report, not a failure by itself.
    let mut write_failed: Option<String> = None;
    let mut answered = 0;
    let mut as_expected = true;
    for step in &case.steps {
        match step {
            Step::Send(bytes) => {
                if write_failed.is_none()
                    && let Err(e) = writer.write_all(bytes).and_then(|()| writer.flush())
                {
                    write_failed = Some(e.to_string());
                }
            }
            Step::Trickle(bytes) => {
                for byte in bytes {
                    if write_failed.is_some() || answer_began(&writer) {
                        break;
                    }
                    if let Err(e) = writer.write_all(std::slice::from_ref(byte)) {
                        write_failed = Some(e.to_string());
                    }
                }
            }
            Step::Expect { status, header } => {
                answered += 1;
                let problem = match client.try_response(false) {
                    Ok(resp) => judge(&resp, *status, *header),
                    Err(e) => Some(format!("expected {status}, but {e}")),
                };
                if let Some(problem) = problem {
                    let note = write_failed
                        .as_ref()
                        .map(|e| format!(" (a write had failed: {e})"))
                        .unwrap_or_default();
                    problems.push(format!("response {answered}: {problem}{note}"));
                    as_expected = false;
                    break;
                }
            }
        }
    }
    if as_expected {
        match case.end {
            End::Closed => {
                if let Err(e) = client.closed() {
                    problems.push(format!("expected the connection closed, but {e}"));
                }
            }
            End::Open => {
                let probe = match writer.write_all(PROBE) {
                    Err(e) => Err(format!("the probe could not be written: {e}")),
                    Ok(()) => client.try_response(false),
                };
                match probe {
                    Ok(resp) if resp.status == 200 && resp.body == br#"{"status":"ok"}"# => {}
                    Ok(resp) => problems.push(format!(
                        "the connection was not left clean: the probe GET /healthz got {}",
                        resp.describe()
                    )),
                    Err(e) => problems.push(format!(
                        "the connection was not kept: the probe GET /healthz: {e}"
                    )),
                }
            }
        }
    }
    drop(client);
    let received = setup.received();
    let new = &received[before.min(received.len())..];
    let seen: Vec<Seen> = new.iter().map(Seen::of).collect();
    if seen != case.reaches {
        problems.push(format!(
            "the replica received {} (expected {})",
            Seen::describe(&seen),
            Seen::describe(&case.reaches)
        ));
    }
    problems.extend(never_at_a_replica(new));
    (problems, new.len())
}

// ---------------------------------------------------------------------------
// What must never reach a replica
// ---------------------------------------------------------------------------

/// Headers that are the gateway's to set or that stop at it: also checked
/// in their underscore spellings, which CGI-style servers read as the same.
const MANAGED: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "transfer-encoding",
    "content-length",
    "connection",
    "host",
    "x-forwarded-for",
    "x-deployment-id",
    "x-rollout-side",
];

/// `path` with its percent-escapes decoded (bytes that do not decode are
/// kept as sent).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a replica target reaches the replica's own routes (`/info`,
/// `/metrics`, `/health/*`), or climbs out of the route, however spelled.
fn reaches_replica_internals(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or_default();
    let decoded = percent_decoded(path).to_ascii_lowercase();
    let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    segments
        .first()
        .is_some_and(|first| ["info", "metrics", "health"].contains(first))
        || segments.iter().any(|s| *s == ".." || *s == ".")
}

fn never_at_a_replica(received: &[Received]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in received {
        let what = format!("the replica's {} {}", r.method, r.target);
        for name in [
            "authorization",
            "proxy-authorization",
            "x-deployment-id",
            "x-rollout-side",
        ] {
            if let Some(value) = r.header(name) {
                problems.push(format!("{what} carried the client's `{name}: {value}`"));
            }
        }
        if r.header("transfer-encoding").is_some() && r.header("content-length").is_some() {
            problems.push(format!(
                "{what} carried both Transfer-Encoding and Content-Length"
            ));
        }
        for (name, value) in &r.headers {
            let dashed = name.replace('_', "-");
            if dashed != *name && MANAGED.contains(&dashed.as_str()) {
                problems.push(format!(
                    "{what} carried `{name}: {value}`, an underscore spelling of {dashed}"
                ));
            }
        }
        let everything = format!(
            "{} {:?} {}",
            r.target,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
        if everything.contains(MARKER) {
            problems.push(format!("{what}: bytes of a smuggled request reached it"));
        }
        if reaches_replica_internals(&r.target) {
            problems.push(format!("{what}: a replica-internal route reached it"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn hostile_requests_are_answered_as_they_should_and_nothing_smuggled_reaches_a_replica() {
    let cases = corpus();
    let counts: Vec<String> = CATEGORIES
        .iter()
        .map(|c| {
            let n = cases.iter().filter(|case| case.category == *c).count();
            format!("{c:?} {n}")
        })
        .collect();
    let counts = format!("{} cases: {}", cases.len(), counts.join(", "));
    println!("hostile corpus: {counts}");
    assert!(cases.len() >= 40, "a corpus of at least 40 cases: {counts}");

    let main = Setup::start_with(MAIN_SERVER, Behaviour::Echo);
    let idle = Setup::start_with(IDLE_SERVER, Behaviour::Echo);
    let mut failures = Vec::new();
    let mut accounted = [0, 0];
    for case in &cases {
        let (setup, gw) = match case.gw {
            Gw::Main => (&main, 0),
            Gw::Idle => (&idle, 1),
        };
        let (problems, seen) = run(setup, case);
        accounted[gw] += seen;
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n    got: {}",
                case.describe(),
                problems.join("\n         ")
            ));
        }
    }

    // The replicas' whole records: exactly as many requests, to the same
    // targets, as the cases let through, and nothing that must never reach
    // a replica among those that came after their case was judged.
    for (i, (gw, setup)) in [(Gw::Main, &main), (Gw::Idle, &idle)]
        .into_iter()
        .enumerate()
    {
        let expected: Vec<(String, String)> = cases
            .iter()
            .filter(|c| c.gw == gw)
            .flat_map(|c| {
                c.reaches
                    .iter()
                    .map(|s| (s.method.clone(), s.target.clone()))
            })
            .collect();
        let received = setup.received();
        let seen: Vec<(String, String)> = received
            .iter()
            .map(|r| (r.method.clone(), r.target.clone()))
            .collect();
        if seen != expected {
            failures.push(format!(
                "the {gw:?} gateway's replica received {} requests, the cases let through {} (the cases above say which)",
                seen.len(),
                expected.len()
            ));
        }
        let late = &received[accounted[i].min(received.len())..];
        if !late.is_empty() {
            failures.push(format!(
                "the {gw:?} gateway's replica received {} after the last case: {}",
                late.len(),
                Seen::describe(&late.iter().map(Seen::of).collect::<Vec<_>>())
            ));
        }
        for problem in never_at_a_replica(late) {
            failures.push(format!("the {gw:?} gateway's replica: {problem}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of the {counts} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
