//! Authorization: no key and malformed ones, the key where it does not
//! count (Proxy-Authorization, the query string), case-insensitive schemes,
//! two Authorization headers, a 1 MiB key, and the gateway's own headers
//! from a client.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    use Category::Auth as K;
    let key = testkit::KEY;
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
    cases
}
