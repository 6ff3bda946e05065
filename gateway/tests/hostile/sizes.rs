//! Sizes: request targets, heads, header values and field counts at and
//! over their limits, declared and chunked bodies over the body limit,
//! overflowing chunk sizes, and long chunk extensions and trailer lines.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
