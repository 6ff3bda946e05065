//! Slow clients: heads and bodies (Content-Length, chunked, after
//! `Expect: 100-continue`) that stop or trickle, answered at the head and
//! body timeouts; a 100-continue answered and its body delivered; and idle
//! connections closed at the keep-alive timeout (on the second gateway).

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
