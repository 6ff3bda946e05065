//! Methods: those predict does not take (case-sensitive, unknown, PRI,
//! CONNECT), a non-token byte in a method, and asterisk-form OPTIONS.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
