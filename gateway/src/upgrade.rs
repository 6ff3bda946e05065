//! Zero-downtime binary upgrade: a new gateway process takes over the
//! running one's listening sockets and local replicas, while the old one
//! finishes what it has in flight.
//!
//! 1. `gateway serve --config F --upgrade` starts the new process. It
//!    listens on the replica socket (`<upgrade socket>.replicas`) and waits
//!    ([`Predecessor`]); it binds no port.
//! 2. SIGQUIT to the running gateway ([`Signals`]): it connects to that
//!    socket (waiting up to [`SUCCESSOR_WAIT`] for it to appear), freezes
//!    its scaling controller and sends its running local replicas, each with
//!    its pipes (`control::provision::handover`). If no new process is
//!    waiting, or the send fails, it logs why and keeps serving as before.
//! 3. Then Pingora's own upgrade: the old process sends its listening
//!    sockets over the upgrade socket, which the new one receives in
//!    `Server::bootstrap`; both accept for a few seconds, then the old one
//!    stops accepting and drains its requests, parked ones included (they
//!    keep waiting for a replica instead of getting the 503 of a SIGTERM),
//!    and exits 0 without stopping the replicas it handed over.
//! 4. The new process adopts the replicas its config still wants unchanged
//!    (no cold start) and stops the others.
//!
//! The listening sockets never close, so no connection is refused; the
//! replicas' stdin pipes are held by one gateway or the other throughout,
//! so a replica still exits when the gateway holding it dies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use config::Config;
use control::provision::handover::{self, Handover, HandoverError, Released};
use control::scaling::ControllerHandle;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use crate::shutdown;

/// How long a new process waits for the running one to hand over: the
/// operator's SIGQUIT, after starting it.
pub const PREDECESSOR_WAIT: Duration = Duration::from_secs(60);

/// How long the running process, on SIGQUIT, waits for a new one to listen
/// (for an operator, or a service manager, that signals first).
pub const SUCCESSOR_WAIT: Duration = Duration::from_secs(10);

/// Longest one handover message may take (both ends are on this machine).
const STEP: Duration = Duration::from_secs(10);

/// Longest Unix socket path (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why an upgrade cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The config file's directory cannot be resolved.
    #[error("cannot resolve the directory of {config}: {source}")]
    ConfigDir {
        /// The config file.
        config: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The socket path is too long for a Unix socket.
    #[error(
        "upgrade socket {path} is {len} bytes long; a Unix socket path (with `.replicas` appended) must fit in {MAX_SOCKET_PATH}: set a shorter [server] upgrade_socket"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The handover itself failed.
    #[error(transparent)]
    Handover(#[from] HandoverError),
}

/// Where a gateway's upgrade sockets are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Pingora's: the listening sockets.
    pub listeners: PathBuf,
    /// Ours: the local replicas.
    pub replicas: PathBuf,
}

impl Paths {
    /// `[server] upgrade_socket` (relative to the config file's directory),
    /// by default `<config file>.upgrade.sock` beside it: unique per
    /// gateway, and the same for the running and the new process, which
    /// share the config file.
    pub fn for_config(config: &Config, config_path: &Path) -> Result<Self, UpgradeError> {
        let dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Canonical, so that processes started from different working
        // directories agree.
        let dir = std::fs::canonicalize(dir).map_err(|source| UpgradeError::ConfigDir {
            config: config_path.to_owned(),
            source,
        })?;
        let listeners = match &config.server.upgrade_socket {
            Some(path) => dir.join(path),
            None => {
                let mut name = config_path.file_name().unwrap_or_default().to_owned();
                name.push(".upgrade.sock");
                dir.join(name)
            }
        };
        let mut replicas = listeners.clone().into_os_string();
        replicas.push(".replicas");
        let replicas = PathBuf::from(replicas);
        let len = replicas.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(UpgradeError::PathTooLong {
                path: listeners,
                len,
            });
        }
        Ok(Self {
            listeners,
            replicas,
        })
    }
}

/// The new process's side: listening for the running gateway's handover.
#[derive(Debug)]
pub struct Predecessor {
    receiver: handover::Receiver,
    path: PathBuf,
}

impl Predecessor {
    /// Listens on the replica socket. Before anything else starts, so a
    /// path that does not work fails the start at once.
    pub fn listen(paths: &Paths) -> Result<Self, UpgradeError> {
        Ok(Self {
            receiver: handover::Receiver::listen(&paths.replicas)?,
            path: paths.replicas.clone(),
        })
    }

    /// Waits for the running gateway's SIGQUIT-triggered handover (blocking:
    /// called before the server's runtimes start).
    pub fn receive(self) -> Result<Handover, UpgradeError> {
        log::info!(
            "upgrade: waiting up to {PREDECESSOR_WAIT:?} for the running gateway to hand over on {}: send it SIGQUIT",
            self.path.display()
        );
        let handover = self.receiver.receive(PREDECESSOR_WAIT, STEP)?;
        log::info!(
            "upgrade: gateway pid {} handed over {} local replica(s); taking over its listening sockets",
            handover.from_pid,
            handover.replicas.len()
        );
        Ok(handover)
    }
}

/// The running process's signals: Pingora's (SIGTERM drains, SIGINT exits
/// at once), except that SIGQUIT hands over to a new process first and is
/// ignored, with an error in the log, when there is none to hand over to.
#[derive(Debug)]
pub struct Signals {
    paths: Paths,
    scaling: ControllerHandle,
}

impl Signals {
    /// Signals for a gateway whose local replicas `scaling` owns.
    pub fn new(paths: Paths, scaling: ControllerHandle) -> Self {
        Self { paths, scaling }
    }

    /// Hands the local replicas to the new process waiting on the replica
    /// socket. On error nothing has changed: this process keeps them.
    async fn hand_over(&self) -> Result<usize, UpgradeError> {
        let sender = self.successor().await?;
        let replicas = self.scaling.hand_over().await;
        let count = replicas.len();
        let sent = send(sender, replicas).await;
        if let Err(e) = sent {
            self.scaling.resume();
            return Err(e);
        }
        self.scaling.commit();
        // From here on, a request parked in this process waits for a
        // replica (they stay) instead of failing at the drain.
        shutdown::set_upgrading();
        Ok(count)
    }

    /// Connects to the new process, waiting for it to listen.
    async fn successor(&self) -> Result<handover::Sender, UpgradeError> {
        let deadline = tokio::time::Instant::now() + SUCCESSOR_WAIT;
        loop {
            let path = self.paths.replicas.clone();
            // A connect on a Unix socket does not wait for the peer; it is
            // still a system call, kept off the server's runtime thread.
            let connected =
                tokio::task::spawn_blocking(move || handover::Sender::connect(&path, STEP))
                    .await
                    .map_err(|e| HandoverError::Protocol {
                        path: self.paths.replicas.clone(),
                        why: format!("connect task: {e}"),
                    })?;
            match connected {
                Ok(sender) => return Ok(sender),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Sends the handover on a blocking thread.
async fn send(sender: handover::Sender, replicas: Vec<Released>) -> Result<(), UpgradeError> {
    let pid = std::process::id();
    tokio::task::spawn_blocking(move || sender.send(pid, &replicas))
        .await
        .map_err(|e| HandoverError::Protocol {
            path: PathBuf::new(),
            why: format!("send task: {e}"),
        })??;
    Ok(())
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot watch signals for upgrades; SIGQUIT upgrades without a check");
            return UnixShutdownSignalWatch.recv().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = quit.recv() => {}
            }
            log::info!(
                "SIGQUIT: handing over to the new gateway waiting on {}",
                self.paths.replicas.display()
            );
            match self.hand_over().await {
                Ok(count) => {
                    log::info!(
                        "upgrade: {count} local replica(s) handed over; sending the listening sockets, then draining"
                    );
                    return ShutdownSignal::GracefulUpgrade;
                }
                Err(e) => log::error!(
                    "upgrade not started, still serving: {e} (start `gateway serve --upgrade` with this config first)"
                ),
            }
        }
    }
}
