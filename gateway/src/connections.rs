//! Idle keep-alive connections to replicas, one LIFO list per replica.
//!
//! Pingora's connection pool costs a task spawn per release and a
//! `getpeername` per reuse; this one is a short critical section on each
//! side. The most recently used connection goes out first, so under light
//! load the same few stay warm and the rest age out. A connection is handed
//! out only if it still looks open: a replica that closed an idle connection
//! has left a FIN (or stray bytes) to read, which a non-blocking read sees
//! without a syscall in the common case (tokio cleared the socket's
//! readiness after the response's last short read).

// A std mutex guards push and pop only, never an await.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// How often connections past their idle time are closed, so they do not
/// linger in CLOSE_WAIT after the replica gave up on them.
const SWEEP: Duration = Duration::from_secs(1);

/// The idle connections to every replica.
#[derive(Debug)]
pub struct Connections {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// Connections kept per replica; more are closed on return.
    per_replica: usize,
    /// Idle longer than this, a connection is closed instead of reused:
    /// below the replica's own idle timeout, so that the replica does not
    /// close it under a request.
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    stream: Stream,
    since: Instant,
}

impl Connections {
    /// An empty pool keeping up to `per_replica` connections per replica,
    /// each for at most `idle_timeout`.
    pub fn new(per_replica: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            per_replica,
            idle_timeout,
        }
    }

    /// The most recently returned open connection to `addr`, if any.
    pub fn checkout(&self, addr: SocketAddr) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let mut idle = {
                let mut lists = self.lock();
                lists.get_mut(&addr)?.pop()?
            };
            // Dropping (closing) a stale connection happens outside the lock.
            if now.duration_since(idle.since) < self.idle_timeout && looks_open(&mut idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream` for the next request to `addr`, unless the replica
    /// already has as many idle connections as allowed.
    pub fn checkin(&self, addr: SocketAddr, stream: Stream) {
        if self.per_replica == 0 {
            return;
        }
        let surplus = {
            let mut lists = self.lock();
            let list = lists.entry(addr).or_default();
            if list.len() < self.per_replica {
                list.push(Idle {
                    stream,
                    since: Instant::now(),
                });
                None
            } else {
                Some(stream)
            }
        };
        drop(surplus);
    }

    /// Closes connections idle for longer than the idle timeout, and forgets
    /// replicas left with none.
    fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut lists = self.lock();
            lists.retain(|_, list| {
                // Oldest first: the expired ones are a prefix.
                let fresh = list
                    .iter()
                    .position(|c| now.duration_since(c.since) < self.idle_timeout)
                    .unwrap_or(list.len());
                expired.extend(list.drain(..fresh));
                !list.is_empty()
            });
        }
        drop(expired);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        // A panic while holding the lock leaves the lists consistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a pooled connection can take a request: a read that would block
/// means the replica has sent nothing (no FIN, no stray bytes) since the
/// last response.
fn looks_open(stream: &mut Stream) -> bool {
    // A no-op waker: the probe must not leave this task registered.
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// Closes expired idle connections every second until shutdown.
#[derive(Debug)]
pub struct Sweeper(pub Arc<Connections>);

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::shutdown::every(SWEEP, shutdown, || self.0.sweep()).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: the pool's side as a Pingora stream, and the
    /// replica's side.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(client));
        (stream, server)
    }

    /// Which connection this is: its file descriptor, while it is open.
    fn id(stream: &Stream) -> i32 {
        stream.id()
    }

    #[tokio::test]
    async fn last_in_first_out_bounded_per_replica() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica = listener.local_addr().unwrap();
        let pool = Connections::new(2, Duration::from_secs(20));
        let mut servers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (stream, server) = pair(&listener).await;
            ids.push(id(&stream));
            servers.push(server);
            pool.checkin(replica, stream);
        }
        // The third was over the bound and closed; the second comes first.
        assert_eq!(pool.checkout(replica).map(|s| id(&s)), Some(ids[1]));
        assert_eq!(pool.checkout(replica).map(|s| id(&s)), Some(ids[0]));
        assert!(pool.checkout(replica).is_none());
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(pool.checkout(other).is_none(), "per replica");
    }

    #[tokio::test]
    async fn closed_or_chatty_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica = listener.local_addr().unwrap();
        let pool = Connections::new(8, Duration::from_secs(20));
        let (open, _keep) = pair(&listener).await;
        let open_id = id(&open);
        pool.checkin(replica, open);
        let (closed, server) = pair(&listener).await;
        pool.checkin(replica, closed);
        drop(server);
        let (chatty, mut server) = pair(&listener).await;
        pool.checkin(replica, chatty);
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        // Let the FIN and the stray bytes arrive (the probe does not wait).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.checkout(replica).map(|s| id(&s)), Some(open_id));
        assert!(pool.checkout(replica).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica = listener.local_addr().unwrap();
        let pool = Connections::new(8, Duration::from_secs(20));
        let (old, _a) = pair(&listener).await;
        pool.checkin(replica, old);
        tokio::time::advance(Duration::from_secs(15)).await;
        let (young, _b) = pair(&listener).await;
        let young_id = id(&young);
        pool.checkin(replica, young);
        tokio::time::advance(Duration::from_secs(10)).await;
        pool.sweep();
        assert_eq!(
            pool.lock().get(&replica).map(Vec::len),
            Some(1),
            "the old one swept"
        );
        assert_eq!(pool.checkout(replica).map(|s| id(&s)), Some(young_id));
        tokio::time::advance(Duration::from_secs(30)).await;
        pool.sweep();
        assert!(
            pool.lock().is_empty(),
            "a replica with none left is forgotten"
        );
    }
}
