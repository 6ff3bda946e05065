//! What must never reach a replica, searched for in the replica's record
//! after every case and in the whole record at the end: the client's key,
//! the gateway's own headers (also in underscore spellings), two framings,
//! any byte of a smuggled request, and the replica's own routes.

use super::*;

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

pub(super) fn never_at_a_replica(received: &[Received]) -> Vec<String> {
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
