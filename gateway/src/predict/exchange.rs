//! The exchange with the replica: the request prepared once (body read
//! when small, head written straight from the client's header), sent on a
//! pooled or new connection with the retry rule, and the response relayed
//! back piece by piece as it arrives.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::Method;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::time::Instant;

use super::client::Client;
use super::request::INLINE_BODY_LIMIT;
use super::response::{Response, ResponseError, ResponseHead};
use super::upstream::{self, Framing};
use super::{ATTEMPTS_HEADER, DEPLOYMENT_HEADER, Gateway, REQUEST_ID_HEADER, RequestCtx};
use crate::reject::Reject;
use routing::Lease;
use routing::outlier::Failure;
use routing::pool::Retry;
use routing::retry::{self, RetryReason};

/// A replica's response being read.
type Upstream = Response<Stream>;

/// The next piece of the replica's response, while it is being read (never
/// resolves once it has been).
async fn next_piece(
    replica: &mut Option<(Upstream, Lease)>,
) -> Result<Option<Bytes>, ResponseError> {
    match replica {
        Some((up, _)) => up.next_piece().await,
        None => std::future::pending().await,
    }
}

/// Response pieces read from the replica and not yet written to the client.
#[derive(Debug, Default)]
struct Backlog {
    pieces: VecDeque<Bytes>,
    bytes: usize,
}

impl Backlog {
    fn push(&mut self, piece: Bytes) {
        self.bytes += piece.len();
        self.pieces.push_back(piece);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let piece = self.pieces.pop_front()?;
        self.bytes -= piece.len();
        Some(piece)
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// The request as it goes to the replica.
struct Outgoing {
    method: Method,
    /// Request line and headers.
    head: BytesMut,
    /// The whole body when `inline`, else what was read of it so far.
    body: Bytes,
    /// The body is whole in memory: head and body leave in one write, and
    /// the request can be sent again on a new connection.
    inline: bool,
    framing: Framing,
}

impl Gateway {
    /// The exchange with the replica: a pooled or new connection, the
    /// request in one write when its body is small, the response streamed
    /// back as it arrives. The slot is given back as soon as the replica's
    /// response has been read.
    pub(super) async fn proxy(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        lease: Lease,
        shutdown: &ShutdownWatch,
    ) -> Result<(), Reject> {
        let outgoing = self.prepare(client, ctx).await?;
        let (up, head, lease) = self.send(client, ctx, lease, &outgoing, shutdown).await?;
        self.relay(client, ctx, up, head, lease).await
    }

    /// Reads the body if it is small and writes the replica's request head.
    async fn prepare(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Outgoing, Reject> {
        let max = ctx.max_body;
        if client.head().expects_continue() && !ctx.body.is_complete() {
            // The gateway answers the client's `Expect` itself: the replica
            // gets the body with the head.
            client
                .write_continue()
                .await
                .map_err(|_| Reject::ClientClosed)?;
        }
        ctx.body.fill(client, INLINE_BODY_LIMIT, max).await?;
        let req = client.head();
        let inline = ctx.body.is_complete();
        let framing = if inline {
            match ctx.body.bytes() {
                0 if !req.declares_body() => Framing::None,
                n => Framing::Length(n),
            }
        } else {
            req.content_length()
                .map_or(Framing::Chunked, Framing::Length)
        };
        let mut head = BytesMut::with_capacity(512);
        upstream::write_head(
            &mut head,
            req,
            ctx.replica_path.resolve(req.path()),
            framing,
            ctx.generated_request_id(),
            upstream::ClientAddress {
                policy: self.upstream.forwarded_for,
                peer: client.peer(),
            },
        );
        Ok(Outgoing {
            method: req.method().clone(),
            head,
            body: ctx.body.take_pending(),
            inline,
            framing,
        })
    }

    /// Sends the request and reads the replica's response head: on a pooled
    /// connection or a new one, retrying only while nothing of the request
    /// can have been processed, or while it is whole in memory and may be
    /// repeated. Returns the session to read the body from and the lease of
    /// the replica that answered.
    async fn send(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        mut lease: Lease,
        out: &Outgoing,
        shutdown: &ShutdownWatch,
    ) -> Result<(Upstream, ResponseHead, Lease), Reject> {
        ctx.upstream_started = Some(Instant::now());
        let mut fresh_only = false;
        let (up, head) = loop {
            let addr = lease.replica().addr();
            let pooled = if fresh_only {
                None
            } else {
                self.connections.checkout(addr)
            };
            let reused = pooled.is_some();
            let mut stream = match pooled {
                Some(stream) => stream,
                None => match self.connect(addr).await {
                    Ok(stream) => stream,
                    // The gateway is out of file descriptors or ports: no
                    // fault of the replica's, which stays in routing.
                    Err(reject @ Reject::LocalResources) => return Err(reject),
                    Err(reject) => {
                        // Nothing reached the replica, so trying another
                        // one is safe for any method, at once. The failed
                        // replica leaves routing until a probe passes.
                        lease.failed(Failure::Connect);
                        lease = match lease.retry_elsewhere(RetryReason::Connect, ctx.attempts) {
                            Retry::Elsewhere(other) => other,
                            // A body still being read cannot wait: the
                            // queue would read it into nowhere.
                            Retry::Wait if out.inline => {
                                match self.requeue(client, ctx, lease, shutdown).await? {
                                    Some(lease) => lease,
                                    None => return Err(reject),
                                }
                            }
                            // (`Again` answers busy only.)
                            Retry::Wait | Retry::Again | Retry::Spent => return Err(reject),
                        };
                        ctx.attempts += 1;
                        continue;
                    }
                },
            };
            // Within the request's deadline: a replica that stops reading
            // the body would hold the request otherwise. (An inline write
            // completes at its first poll: no timer is armed for it.)
            let deadline = ctx.deadline;
            let writing = async {
                if out.inline {
                    Ok(upstream::write_all_vectored(&mut stream, &out.head, &out.body).await)
                } else {
                    self.stream_body(client, &mut stream, out, ctx).await
                }
            };
            let written = match tokio::time::timeout_at(deadline, writing).await {
                Ok(written) => written?,
                Err(_) if ctx.body.is_reading() => return Err(Reject::BodyTimeout),
                Err(_) => return Err(Reject::RequestTimeout),
            };
            if written.is_err() {
                // A pooled connection the replica had closed: the request
                // never reached it.
                if reused && out.inline {
                    fresh_only = true;
                    continue;
                }
                lease.failed(Failure::Connect);
                return Err(Reject::ReplicaFailed);
            }
            let head_only = out.method == Method::HEAD;
            let response = tokio::select! {
                biased;
                response = Upstream::read_head(
                    stream,
                    head_only,
                    self.upstream.first_byte_timeout,
                    self.upstream.read_timeout,
                    ctx.deadline,
                    self.upstream.expose_replica_id,
                ) => response,
                () = client.closed() => return Err(Reject::ClientClosed),
            };
            match response {
                Ok((up, head)) => {
                    let now = Instant::now();
                    ctx.first_byte = Some(now - ctx.started);
                    // A busy replica is neither failing nor a latency sample.
                    let why = if head.is_busy() {
                        RetryReason::Busy
                    } else if head.is_replica_failure() {
                        lease.failed(Failure::ServerError);
                        RetryReason::Failure
                    } else {
                        lease.answered(now - ctx.upstream_started.unwrap_or(ctx.started));
                        break (up, head);
                    };
                    if self.retry(client, ctx, &mut lease, out, why).await? {
                        // The response is dropped unread, and its
                        // connection with it.
                        fresh_only = false;
                    } else {
                        break (up, head);
                    }
                }
                Err(ResponseError::Timeout(_)) => {
                    // The request's own deadline is no fault of the
                    // replica's; its first-byte timeout is.
                    if Instant::now() >= ctx.deadline {
                        return Err(Reject::ReplicaTimeout);
                    }
                    lease.failed(Failure::Timeout);
                    if !self
                        .retry(client, ctx, &mut lease, out, RetryReason::Failure)
                        .await?
                    {
                        return Err(Reject::ReplicaTimeout);
                    }
                    fresh_only = false;
                }
                Err(ResponseError::Closed { nothing_read: true })
                    if reused && out.inline && upstream::idempotent(&out.method) =>
                {
                    // Closed before any byte of a response: the replica may
                    // have dropped an idle connection as the request came.
                    // Only a repeatable request is sent again.
                    fresh_only = true;
                }
                Err(e) => {
                    log::debug!("replica {addr}: {e}");
                    lease.failed(Failure::Cut);
                    if !self
                        .retry(client, ctx, &mut lease, out, RetryReason::Failure)
                        .await?
                    {
                        return Err(Reject::ReplicaFailed);
                    }
                    fresh_only = false;
                }
            }
        };
        Ok((up, head, lease))
    }

    /// Whether the request gets another attempt after one failed for
    /// `why`, once the backoff has passed: the body is whole in memory,
    /// the reason is one that makes it safe (busy: the replica processed
    /// nothing) or the deployment retries idempotent requests and this is
    /// one, and the deployment's policy and budget allow it. `lease` is
    /// then another replica's slot, or, after a busy answer with no other
    /// replica to try, the same one again: its slots are taken by other
    /// senders (another gateway), so the request waits for it, within its
    /// deadline, and never takes busy for a failure. Nothing of a response
    /// has reached the client yet.
    async fn retry(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        lease: &mut Lease,
        out: &Outgoing,
        why: RetryReason,
    ) -> Result<bool, Reject> {
        let policy = lease.retry_policy();
        let safe =
            why == RetryReason::Busy || (policy.idempotent && upstream::idempotent(&out.method));
        if !out.inline || !safe {
            return Ok(false);
        }
        let other = match lease.retry_elsewhere(why, ctx.attempts) {
            Retry::Elsewhere(other) => Some(other),
            Retry::Again => None,
            Retry::Wait | Retry::Spent => return Ok(false),
        };
        let wait = retry::backoff(&policy, ctx.attempts);
        if Instant::now() + wait >= ctx.deadline {
            return Ok(false);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = client.closed() => return Err(Reject::ClientClosed),
        }
        ctx.attempts += 1;
        // The replica's time (metrics, latency samples) is the last
        // attempt's.
        ctx.upstream_started = Some(Instant::now());
        if let Some(other) = other {
            // Gives the old slot back.
            *lease = other;
        }
        Ok(true)
    }

    /// Writes the client's response head and relays the body as it comes.
    /// While a write to the client waits, the replica's response is read on
    /// into a backlog (up to the response buffer), so that a slow client
    /// holds the replica's slot no longer than its response takes: the slot
    /// frees, and the connection goes back to the pool, as soon as the
    /// replica's response has been read.
    async fn relay(
        &self,
        client: &mut Client<'_>,
        ctx: &mut RequestCtx,
        up: Upstream,
        response: ResponseHead,
        lease: Lease,
    ) -> Result<(), Reject> {
        let deployment = ctx.deployment.as_ref().map(|id| (DEPLOYMENT_HEADER, id));
        let request_id = ctx.generated_request_id().map(|id| (REQUEST_ID_HEADER, id));
        let attempts = (ctx.attempts > 1).then(|| http::HeaderValue::from(ctx.attempts));
        let attempts = attempts.as_ref().map(|n| (ATTEMPTS_HEADER, n));
        client
            .write_head(
                &response,
                deployment.into_iter().chain(request_id).chain(attempts),
            )
            .await
            .map_err(|_| Reject::ClientClosed)?;
        if !up.has_buffered() {
            // The body is not here yet (a stream, say): the head goes now.
            client.flush().await.map_err(|_| Reject::ClientClosed)?;
        }
        let mut replica = Some((up, lease));
        let mut backlog = Backlog::default();
        loop {
            let piece = match backlog.pop() {
                Some(piece) => piece,
                None => match next_piece(&mut replica).await {
                    Ok(Some(piece)) => piece,
                    end => {
                        self.release(ctx, replica.take(), end);
                        break;
                    }
                },
            };
            let mut write = std::pin::pin!(client.write_body(piece));
            let written = loop {
                tokio::select! {
                    biased;
                    written = &mut write => break written,
                    next = next_piece(&mut replica),
                        if replica.is_some() && backlog.bytes < self.upstream.response_buffer_bytes =>
                    {
                        match next {
                            Ok(Some(piece)) => backlog.push(piece),
                            end => self.release(ctx, replica.take(), end),
                        }
                    }
                }
            };
            if written.is_err() {
                // The client stopped reading (or left): the connection is
                // closed instead of finishing the response.
                ctx.abort = true;
                break;
            }
            if backlog.is_empty() && replica.is_none() {
                break;
            }
        }
        if let Some((_, lease)) = replica {
            // The client went first: the replica's connection, its response
            // unread, is not reused.
            ctx.upstream_done = Some(Instant::now());
            ctx.replica = Some(lease.replica().addr());
        }
        Ok(())
    }

    /// The replica's response has been read to `end` (its end, or where
    /// it broke off): its slot frees now, and its connection goes back to
    /// the pool if the response ended cleanly.
    fn release(
        &self,
        ctx: &mut RequestCtx,
        replica: Option<(Upstream, Lease)>,
        end: Result<Option<Bytes>, ResponseError>,
    ) {
        let Some((up, lease)) = replica else { return };
        let addr = lease.replica().addr();
        ctx.upstream_done = Some(Instant::now());
        ctx.replica = Some(addr);
        let broke_off = match &end {
            Ok(_) => false,
            Err(ResponseError::Timeout(_)) => Instant::now() < ctx.deadline,
            Err(_) => true,
        };
        if broke_off {
            lease.failed(Failure::Cut);
        }
        drop(lease);
        match end {
            Ok(_) => {
                if let Some(stream) = up.into_reusable() {
                    self.connections.checkin(addr, stream);
                }
            }
            // The request's deadline passed mid-response: cut, but not the
            // replica's failure (a stream may simply last that long).
            Err(ResponseError::Timeout(_)) if Instant::now() >= ctx.deadline => ctx.abort = true,
            Err(e) => {
                // The replica broke off mid-response: the client sees a
                // truncated response and a closed connection.
                log::debug!("replica {addr}: {e}");
                ctx.abort = true;
                ctx.failed = true;
            }
        }
    }

    /// Writes the head and a body too large to hold, piece by piece as the
    /// client sends it. The outer error is the client's; the inner one the
    /// replica connection's.
    async fn stream_body(
        &self,
        client: &mut Client<'_>,
        stream: &mut Stream,
        out: &Outgoing,
        ctx: &mut RequestCtx,
    ) -> Result<std::io::Result<()>, Reject> {
        use tokio::io::AsyncWriteExt;
        let max = ctx.max_body;
        if let Err(e) = stream.write_all(&out.head).await {
            return Ok(Err(e));
        }
        let mut piece = out.body.clone();
        loop {
            if let Err(e) = upstream::write_body_piece(stream, out.framing, &piece).await {
                return Ok(Err(e));
            }
            match ctx.body.read_piece(client, max).await {
                Ok(Some(next)) => piece = next,
                Ok(None) => break,
                Err(reject) => return Err(reject),
            }
        }
        Ok(upstream::finish_body(stream, out.framing).await)
    }

    /// A new connection to a replica.
    async fn connect(&self, addr: std::net::SocketAddr) -> Result<Stream, Reject> {
        let connect = tokio::net::TcpStream::connect(addr);
        let tcp = match tokio::time::timeout(self.upstream.connect_timeout, connect).await {
            // Unreachable in time is unreachable: 502, as a refusal is.
            Err(_) => return Err(Reject::ReplicaFailed),
            Ok(Err(e)) if routing::shortage::is_local_shortage(&e) => {
                log::warn!("cannot connect to replica {addr}: {e}");
                return Err(Reject::LocalResources);
            }
            Ok(Err(_)) => return Err(Reject::ReplicaFailed),
            Ok(Ok(tcp)) => tcp,
        };
        // Requests are written whole: nothing to gain from Nagle's delay.
        let _ = tcp.set_nodelay(true);
        Ok(Box::new(pingora_core::protocols::l4::stream::Stream::from(
            tcp,
        )))
    }
}
