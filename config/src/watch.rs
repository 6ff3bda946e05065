//! Watching one file for changes, for the gateway's config reload and the
//! engine's model reload alike.
//!
//! The file's directory is watched, not the file: editors that write a new
//! file and rename it over the old one, and symlink swaps, replace the inode
//! a file watch would be attached to. A burst of events (one save is often
//! several) is one change: the callback runs once the events have been
//! quiet for `debounce`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

/// Why a watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path has no parent directory to watch.
    #[error("cannot watch {0}: no parent directory")]
    NoDirectory(PathBuf),
    /// The OS watcher failed.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
}

/// A running watch: its thread calls the callback after each settled burst
/// of changes. Dropping it stops the watch and waits for the thread to end
/// (a callback in progress finishes first).
#[derive(Debug)]
pub struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileWatch {
    /// Keeps watching for as long as the process runs.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        // The watcher owns the channel's sender: without it the thread's
        // `recv` fails and its loop ends.
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("a file watch's callback panicked");
        }
    }
}

/// Calls `on_change` from a background thread (named `thread_name`) after
/// each settled burst of changes to the file at `path`, until the returned
/// [`FileWatch`] is dropped.
// Wall-clock deadlines on a plain thread: no tokio (and no paused test
// clock) here.
#[allow(clippy::disallowed_methods)]
pub fn watch_file(
    path: &Path,
    debounce: Duration,
    thread_name: &str,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<FileWatch, WatchError> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return Err(WatchError::NoDirectory(path.to_owned())),
    }
    .to_owned();
    let notify_error = |source| WatchError::Notify {
        path: dir.clone(),
        source,
    };
    let file_name = path.file_name().map(ToOwned::to_owned);
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).map_err(notify_error)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(notify_error)?;
    let relevant = move |event: &notify::Event| {
        !event.kind.is_access()
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == file_name.as_deref())
    };
    let thread = std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                match event {
                    Ok(event) if relevant(&event) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        log::error!("watch error: {e}");
                        continue;
                    }
                }
                // Settle: wait until no event about *this file* came for
                // `debounce`; other files in the directory (a busy /tmp, the
                // usage log beside the config) must not keep us waiting.
                let mut quiet_until = Instant::now() + debounce;
                loop {
                    let left = quiet_until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(Ok(event)) if relevant(&event) => {
                            quiet_until = Instant::now() + debounce;
                        }
                        Ok(_) => {}
                        Err(mpsc::RecvTimeoutError::Timeout) => break, // quiet long enough
                        Err(mpsc::RecvTimeoutError::Disconnected) => return, // stopped
                    }
                }
                on_change();
            }
        })
        .map_err(|e| notify_error(notify::Error::io(e)))?;
    Ok(FileWatch {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}
