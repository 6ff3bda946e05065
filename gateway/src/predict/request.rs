//! What the gateway reads off the client's request: its session hash, its
//! size against the parked-bytes budget, its body, and whether its client
//! left while it waited.

use bytes::{Bytes, BytesMut};

use super::client::Client;
use crate::http1::RequestHead;
use crate::reject::Reject;
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
pub(super) fn parked_bytes(req: &RequestHead) -> u64 {
    req.len() as u64 + req.content_length().unwrap_or(0)
}

/// The path the replica is sent: `/predict`, or the passthrough route,
/// which is the tail of the client's path (kept as an offset so that the
/// request context borrows nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplicaPath {
    /// `/predict`.
    Predict,
    /// `/`: a bare `.../sync`.
    Root,
    /// The client's path from this byte on.
    Tail(usize),
}

impl ReplicaPath {
    /// Where `call`, parsed from `path`, goes on the replica.
    pub(super) fn of(call: Call<'_>, path: &str) -> Self {
        match call {
            Call::Predict | Call::Wake => ReplicaPath::Predict,
            Call::Sync(route) if path.ends_with(route) => {
                ReplicaPath::Tail(path.len() - route.len())
            }
            Call::Sync(_) => ReplicaPath::Root,
        }
    }

    /// The path itself, given the client's path.
    pub(super) fn resolve(self, path: &str) -> &str {
        match self {
            ReplicaPath::Predict => "/predict",
            ReplicaPath::Root => "/",
            ReplicaPath::Tail(from) => &path[from..],
        }
    }
}

/// Bodies up to this size are read whole before the replica is called, so
/// that head and body leave in one write and a broken pooled connection can
/// be replaced without asking the client again. Larger bodies stream.
pub(super) const INLINE_BODY_LIMIT: usize = 64 * 1024;

/// The part of the client's body read so far.
#[derive(Debug, Default)]
pub(super) struct RequestBody {
    /// Read but not yet forwarded, while it is one piece (most bodies are:
    /// it came with the head), kept as read.
    first: Option<Bytes>,
    /// Read but not yet forwarded, once it is more than one piece.
    pending: BytesMut,
    /// Bytes read in all.
    read: u64,
    /// The client's body has ended.
    done: bool,
    /// A read of the client's body is under way (or was, when the request
    /// was given up in the middle of it).
    reading: bool,
}

impl RequestBody {
    /// Bytes read in all.
    pub(super) fn bytes(&self) -> u64 {
        self.read
    }

    /// Whether the request was waiting for its client's body (and so the
    /// client is slow, not the replica).
    pub(super) fn is_reading(&self) -> bool {
        self.reading
    }

    /// Whether the whole body has been read.
    pub(super) fn is_complete(&self) -> bool {
        self.done
    }

    /// Hands over what is read but not forwarded yet.
    pub(super) fn take_pending(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => self.pending.split().freeze(),
        }
    }

    fn pending_len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.pending.len()
    }

    /// Reads until the body ends or `keep` bytes are pending, counting
    /// against `max` in all: 413 beyond it, 400 for a body that cannot be
    /// read (bad framing, cut short; the connection is not reused).
    pub(super) async fn fill(
        &mut self,
        client: &mut Client<'_>,
        keep: usize,
        max: u64,
    ) -> Result<(), Reject> {
        while !self.done && self.pending_len() < keep {
            match self.read_piece(client, max).await? {
                Some(piece) if self.pending_len() == 0 => self.first = Some(piece),
                Some(piece) => {
                    if let Some(first) = self.first.take() {
                        self.pending.extend_from_slice(&first);
                    }
                    self.pending.extend_from_slice(&piece);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The next piece of the body, straight from the client (`None` at the
    /// end), counting against `max`.
    pub(super) async fn read_piece(
        &mut self,
        client: &mut Client<'_>,
        max: u64,
    ) -> Result<Option<Bytes>, Reject> {
        if self.done {
            return Ok(None);
        }
        self.reading = true;
        let piece = client.read_body().await;
        self.reading = false;
        match piece? {
            Some(piece) => {
                self.read += piece.len() as u64;
                if self.read > max {
                    return Err(Reject::BodyTooLarge);
                }
                Ok(Some(piece))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// Largest body read while parked; larger bodies are left unread until a
/// slot is leased.
const PARKED_BODY_LIMIT: u64 = 64 * 1024;

/// Resolves when the client of a parked request goes away. To see that,
/// the request body must have been read first (the close comes after it):
/// bodies up to [`PARKED_BODY_LIMIT`] with a known length are read into
/// `body`, which goes to the replica later. A larger or unframed body is not
/// read, and then a close is noticed only once the request leaves the queue.
pub(super) async fn client_gone(client: &mut Client<'_>, body: &mut RequestBody, max: u64) {
    let head = client.head();
    match head.content_length() {
        _ if head.expects_continue() => return std::future::pending().await,
        Some(n) if n <= PARKED_BODY_LIMIT.min(max) => {}
        None if !head.is_chunked() => {}
        _ => return std::future::pending().await,
    }
    if body.fill(client, usize::MAX, max).await.is_err() {
        return;
    }
    // The body is complete: any further read ends only with a close.
    client.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_paths() {
        let path = "/models/m/production/sync/v1/embeddings";
        let call = crate::route::parse(None, path).unwrap().call;
        assert_eq!(ReplicaPath::of(call, path).resolve(path), "/v1/embeddings");
        let bare = "/models/m/production/sync";
        let call = crate::route::parse(None, bare).unwrap().call;
        assert_eq!(ReplicaPath::of(call, bare).resolve(bare), "/");
        let predict = "/models/m/production/predict";
        let call = crate::route::parse(None, predict).unwrap().call;
        assert_eq!(ReplicaPath::of(call, predict).resolve(predict), "/predict");
    }
}
