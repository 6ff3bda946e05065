//! HTTP versions: HTTP/1.0 with and without keep-alive and with
//! `Expect`, malformed and unsupported versions, HTTP/0.9-style requests, a
//! space in the target, and empty lines before the request line.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
