//! Replicas taken over from the previous gateway process in a binary
//! upgrade. They are not our children, so they are watched and signalled
//! through a pidfd (which, unlike a bare pid, can never name another
//! process once this one is gone); their pipes came with them, so their
//! stderr still passes through, and they still exit when the gateway
//! holding their stdin goes.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader, Interest};
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use super::{
    LocalSettings, Process, Processes, log_lines, pass_through, ready, register, unregister,
    with_last_words,
};
use crate::provision::handover::Released;
use crate::provision::{Instance, InstanceState, ProvisionError};

/// Takes over a handed-over replica: checks it is still there, then
/// supervises it in a task (which must run on a runtime that outlives it,
/// as for started replicas). It turns `Running` once its readiness probe
/// passes at the address it was handed over with.
pub(super) fn adopt(
    replica: Released,
    events: &Arc<Notify>,
    settings: &LocalSettings,
    processes: &Arc<Processes>,
) -> Result<Arc<Instance>, ProvisionError> {
    let record = replica.record;
    let refuse = |why: String| ProvisionError::Adopt {
        name: record.name.clone(),
        pid: record.pid,
        why,
    };
    let pid = Pid::from_raw(record.pid).ok_or_else(|| refuse("no such pid".into()))?;
    let pidfd =
        pidfd_open(pid, PidfdFlags::empty()).map_err(|e| refuse(format!("it is gone ({e})")))?;
    // Deprecated by tokio (#8587) because an arbitrary `AsRawFd` type may
    // change or close its descriptor under the reactor; an `OwnedFd` moved
    // in cannot, so this is sound. Its replacement is `unsafe`, which the
    // workspace denies.
    #[allow(deprecated)]
    let exited = AsyncFd::with_interest(pidfd, Interest::READABLE)
        .map_err(|e| refuse(format!("cannot watch it: {e}")))?;
    let (stdout, stderr) = (
        replica.pipes.stdout.try_clone(),
        replica.pipes.stderr.try_clone(),
    );
    let (Ok(stdout), Ok(stderr)) = (stdout, stderr) else {
        return Err(refuse("cannot copy its pipes".into()));
    };
    let instance = Arc::new(Instance::adopted(record.name.clone(), Arc::clone(events)));
    let process = Arc::new(Process {
        pid: record.pid,
        deployment: record.deployment,
        args: record.args,
        // Holding its stdin is what keeps it alive, and lets it die with us.
        pipes: replica.pipes,
        detach: Notify::new(),
    });
    register(processes, instance.name(), Arc::clone(&process));
    log::info!(
        "replica {} (pid {}) adopted from the previous gateway at {}",
        instance.name(),
        record.pid,
        record.addr
    );
    let task = Supervised {
        instance: Arc::clone(&instance),
        process,
        exited,
        stop_grace: settings.stop_grace,
    };
    let processes = Arc::clone(processes);
    tokio::spawn(async move {
        let name = task.instance.name().to_owned();
        task.run(record.addr, stdout, stderr).await;
        unregister(&processes, &name);
    });
    Ok(instance)
}

/// `reason`, with the replica's last lines of stderr.
async fn exit_reason(
    last_words: &mut Option<tokio::task::JoinHandle<Vec<String>>>,
    reason: &str,
) -> String {
    match last_words.take() {
        Some(words) => with_last_words(reason.to_owned(), words).await,
        None => reason.to_owned(),
    }
}

/// One adopted replica under supervision.
struct Supervised {
    instance: Arc<Instance>,
    process: Arc<Process>,
    /// Its pidfd: readable once it has exited.
    exited: AsyncFd<OwnedFd>,
    stop_grace: Duration,
}

impl Supervised {
    async fn run(self, addr: std::net::SocketAddr, stdout: OwnedFd, stderr: OwnedFd) {
        let instance = &self.instance;
        let mut last_words = match pipe::Receiver::from_owned_fd(stderr) {
            Ok(stderr) => Some(tokio::spawn(pass_through(stderr))),
            Err(e) => {
                log::warn!("replica {}: cannot read its stderr: {e}", instance.name());
                None
            }
        };
        match pipe::Receiver::from_owned_fd(stdout) {
            Ok(stdout) => drop(tokio::spawn(log_lines(
                BufReader::new(stdout).lines(),
                addr,
            ))),
            Err(e) => log::warn!("replica {}: cannot read its stdout: {e}", instance.name()),
        }
        // It was ready for the previous gateway a moment ago: the probe
        // confirms it still is before it takes requests from this one.
        tokio::select! {
            probe = ready(addr) => if let Err(why) = probe {
                self.terminate().await;
                instance.set_state(InstanceState::Exited { reason: exit_reason(&mut last_words, &why).await });
                return;
            },
            _ = self.exited.readable() => {
                instance.set_state(InstanceState::Exited { reason: exit_reason(&mut last_words, "exited").await });
                return;
            }
            () = instance.stop_requested() => {
                self.terminate().await;
                instance.set_state(InstanceState::Stopped);
                return;
            }
        }
        instance.set_state(InstanceState::Running(addr));
        tokio::select! {
            _ = self.exited.readable() => {
                // Its exit status went to its parent, the previous gateway
                // or init: only that it exited is known here.
                instance.set_state(InstanceState::Exited { reason: exit_reason(&mut last_words, "exited").await });
            }
            () = instance.stop_requested() => {
                self.terminate().await;
                instance.set_state(InstanceState::Stopped);
            }
            () = self.process.detach.notified() => {
                log::info!("replica {} handed over to the next gateway", instance.name());
            }
        }
    }

    /// SIGTERM (the engine drains its requests), then SIGKILL after the
    /// grace period; returns once it has exited.
    async fn terminate(&self) {
        let name = self.instance.name();
        if let Err(e) = pidfd_send_signal(self.exited.get_ref(), Signal::TERM) {
            log::warn!("replica {name}: SIGTERM failed: {e}");
        }
        if tokio::time::timeout(self.stop_grace, self.exited.readable())
            .await
            .is_ok()
        {
            log::info!("replica {name} stopped");
            return;
        }
        log::warn!(
            "replica {name} ignored SIGTERM for {:?}; killing it",
            self.stop_grace
        );
        if let Err(e) = pidfd_send_signal(self.exited.get_ref(), Signal::KILL) {
            log::warn!("replica {name}: SIGKILL failed: {e}");
        }
        let _ = self.exited.readable().await;
    }
}
