//! What the proxy reads off the client's request: its session hash, its
//! size against the parked-bytes budget, whether its client left while it
//! was parked, and the URI the replica is sent.

use http::{Uri, header};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use crate::route::Call;

/// A session id's hash: the same on every gateway built from this code
/// (`DefaultHasher::new` has fixed keys).
pub(super) fn session_hash(id: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    hasher.write(id);
    hasher.finish()
}

/// What a parked request holds against the gateway's parked-bytes budget:
/// its head and its declared body. A body without a length counts as
/// nothing until it is read; the per-request body limit still applies.
pub(super) fn parked_bytes(req: &RequestHeader) -> u64 {
    let head: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + req.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len())
        + 16;
    head as u64 + content_length(req).unwrap_or(0)
}

/// Largest body read while parked; Pingora replays up to this much to the
/// replica, so larger bodies are left unread until a slot is leased.
const PARKED_BODY_LIMIT: u64 = 64 * 1024;

/// Resolves when the client of a parked request goes away. To see that,
/// the request body must have been read first (the close comes after it);
/// bodies up to [`PARKED_BODY_LIMIT`] with a known length are read into
/// Pingora's retry buffer, which replays them to the replica later. A larger
/// or unframed body is not read, and then a close is noticed only once the
/// request leaves the queue.
pub(super) async fn client_gone(session: &mut Session, max_body: u64) {
    let declared = content_length(session.req_header());
    let chunked = session
        .req_header()
        .headers
        .contains_key(header::TRANSFER_ENCODING);
    match declared {
        Some(n) if !chunked && n <= PARKED_BODY_LIMIT.min(max_body) => {}
        None if !chunked => {}
        _ => return std::future::pending().await,
    }
    session.enable_retry_buffering();
    loop {
        match session.read_request_body().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return,
        }
    }
    // The body is complete: any further read ends only with a close.
    let _ = session.downstream_session.read_body_or_idle(true).await;
}

pub(super) fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The replica-side URI: `/predict`, or the passthrough route, with the
/// client's query string.
pub(super) fn upstream_uri(call: Call<'_>, query: Option<&str>) -> Option<Uri> {
    match (call, query) {
        (Call::Predict, None) => Some(Uri::from_static("/predict")),
        (Call::Predict, Some(q)) => format!("/predict?{q}").parse().ok(),
        (Call::Sync(path), None) => path.parse().ok(),
        (Call::Sync(path), Some(q)) => format!("{path}?{q}").parse().ok(),
        (Call::Wake, _) => None,
    }
}
