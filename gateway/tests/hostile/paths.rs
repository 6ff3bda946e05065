//! Path tricks: dot segments, doubled slashes and escapes that are never
//! resolved; the replica's own routes through `/sync/`, however spelled;
//! what passes through `/sync/v1` (any method, the query untouched); a
//! query on predict; and Host-named models.

use super::requests::*;
use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
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
    cases
}
