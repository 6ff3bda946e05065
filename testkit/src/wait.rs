//! Waiting for a condition instead of sleeping for a guessed time: poll it
//! until it holds, and fail naming what was awaited when it never does.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(25);

/// The default limit for [`eventually`] and [`eventually_async`].
pub const LIMIT: Duration = Duration::from_secs(20);

/// Polls `condition` (blocking the thread) until it holds; panics after
/// `limit` with "`what` did not happen within ...".
pub fn eventually_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`eventually_within`] the default [`LIMIT`].
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(what, LIMIT, condition);
}

/// Polls the async `condition` (on the caller's runtime) until it holds;
/// panics after `limit` naming `what`.
pub async fn eventually_async_within<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually_async_within`] the default [`LIMIT`].
pub async fn eventually_async<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_async_within(what, LIMIT, condition).await;
}

/// Polls the async `probe` (on the caller's runtime) until it returns a
/// value, and returns it; panics after `limit` naming `what`.
pub async fn eventually_some_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
