//! Pipelining: requests in one write answered in order; a request
//! pipelined after one that closes the connection (413, 400, `Connection:
//! close`, HTTP/1.0) not served, and after a refusal that keeps it served;
//! bytes after a body that are no request.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
