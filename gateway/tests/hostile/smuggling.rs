//! Smuggling and header syntax: two framings (CL.TE, TE.CL and their
//! disguises), Content-Length and Transfer-Encoding values, chunk framing,
//! header syntax (obs-fold, spaces, control bytes), Host and
//! absolute-form targets, and underscore spellings of framing and
//! gateway headers.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
