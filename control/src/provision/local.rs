//! Replicas as `engine` processes on this machine.
//!
//! Each replica binds port 0 and announces its address on its first stdout
//! line; it becomes `Running` only after that line and a passing readiness
//! probe. Its stdin is a pipe the gateway never writes to: the engine runs
//! with `--exit-on-stdin-eof`, so when the gateway dies, however it dies,
//! the kernel closes the pipe and every replica exits. No orphans.
//!
//! Its stderr passes through to the gateway's, and its last lines are kept:
//! a replica that fails to start says why in its deployment's status, in
//! its own words.
//!
//! For a binary upgrade, a running replica can be handed to the next
//! gateway process with copies of its three pipes ([`super::handover`]),
//! which then supervises it by pidfd ([`adopted`]): it keeps serving, and
//! it still exits when the gateway holding its stdin goes.

mod adopted;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::Notify;

use super::handover::{Pipes, Released, ReplicaRecord};
use super::{Instance, InstanceState, ProvisionError, Provisioner, ReplicaSpec};
use crate::health;

/// How local replicas are run.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// The `engine` binary.
    pub binary: PathBuf,
    /// Longest a replica may take from spawn to ready (model loading).
    pub start_timeout: Duration,
    /// After SIGTERM, how long a replica may take to exit before SIGKILL.
    pub stop_grace: Duration,
    /// The address replicas listen on (each on a port of its own), and
    /// are reached and published at (`[node] replica_host`).
    pub host: std::net::IpAddr,
}

impl LocalSettings {
    /// The defaults, with `binary` or else `engine` beside the running executable.
    pub fn new(binary: Option<PathBuf>) -> Self {
        let binary = binary.unwrap_or_else(|| {
            std::env::current_exe()
                .map(|exe| exe.with_file_name("engine"))
                .unwrap_or_else(|_| PathBuf::from("engine"))
        });
        Self {
            binary,
            start_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(10),
            host: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

/// Starts `engine` processes; must be used within a Tokio runtime that
/// outlives them (the scaling controller's).
#[derive(Debug)]
pub struct LocalProvisioner {
    settings: LocalSettings,
    events: Arc<Notify>,
    processes: Arc<Processes>,
}

/// The replica processes being supervised, by instance name: what a
/// handover needs of each. Changes only when one starts or ends.
type Processes = ArcSwap<HashMap<String, Arc<Process>>>;

/// What a handover needs to know of a replica process.
#[derive(Debug)]
struct Process {
    pid: i32,
    /// `model/deployment`.
    deployment: String,
    args: Vec<String>,
    /// Copies of its pipes (the supervising task reads its own).
    pipes: Pipes,
    /// Told when the next gateway holds it: supervision ends, the
    /// process stays.
    detach: Notify,
}

impl LocalProvisioner {
    /// A provisioner that notifies `events` on every replica state change.
    pub fn new(settings: LocalSettings, events: Arc<Notify>) -> Self {
        Self {
            settings,
            events,
            processes: Arc::default(),
        }
    }

    fn process(&self, instance: &Instance) -> Option<Arc<Process>> {
        self.processes.load().get(instance.name()).cloned()
    }
}

/// Records a supervised process under its instance's name.
fn register(processes: &Processes, name: &str, process: Arc<Process>) {
    processes.rcu(|map| {
        let mut map = HashMap::clone(map);
        map.insert(name.to_owned(), Arc::clone(&process));
        map
    });
}

/// Forgets a process whose supervision ended.
fn unregister(processes: &Processes, name: &str) {
    processes.rcu(|map| {
        let mut map = HashMap::clone(map);
        map.remove(name);
        map
    });
}

/// A copy of a pipe end the gateway holds.
fn copy(fd: Option<&impl AsFd>) -> std::io::Result<OwnedFd> {
    fd.ok_or_else(|| std::io::Error::other("pipe missing"))?
        .as_fd()
        .try_clone_to_owned()
}

impl Provisioner for LocalProvisioner {
    fn start(&self, spec: &ReplicaSpec) -> Result<Arc<Instance>, ProvisionError> {
        let instance = Arc::new(Instance::new(&spec.deployment, Arc::clone(&self.events)));
        let args = spec.engine.to_args();
        let mut command = Command::new(&self.settings.binary);
        command
            .arg("--listen")
            .arg(std::net::SocketAddr::new(self.settings.host, 0).to_string())
            .args(["--exit-on-stdin-eof", "--replica-id"])
            .arg(instance.name())
            // The OpenAI and KServe v2 APIs name the model as the gateway does.
            .arg("--model-name")
            .arg(
                spec.deployment
                    .split('/')
                    .next()
                    .unwrap_or(&spec.deployment),
            )
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The last resort if the supervising task is dropped.
            .kill_on_drop(true);
        let spawn_error = |source| ProvisionError::Spawn {
            binary: self.settings.binary.display().to_string(),
            source,
        };
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().unwrap_or(0);
        log::info!("replica {} starting (pid {pid})", instance.name());
        let pipes = (|| {
            Ok::<_, std::io::Error>(Pipes {
                stdin: copy(child.stdin.as_ref())?,
                stdout: copy(child.stdout.as_ref())?,
                stderr: copy(child.stderr.as_ref())?,
            })
        })();
        // Without copies it could not be handed over; it runs all the same.
        match pipes {
            Ok(pipes) => register(
                &self.processes,
                instance.name(),
                Arc::new(Process {
                    pid: i32::try_from(pid).unwrap_or(0),
                    deployment: spec.deployment.clone(),
                    args: args
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                    pipes,
                    detach: Notify::new(),
                }),
            ),
            Err(e) => log::warn!(
                "replica {}: no copy of its pipes ({e}); it cannot be handed over in an upgrade",
                instance.name()
            ),
        }
        tokio::spawn(supervise(
            child,
            Arc::clone(&instance),
            self.settings.clone(),
            Arc::clone(&self.processes),
        ));
        Ok(instance)
    }

    fn stop(&self, instance: &Instance) {
        instance.request_stop();
    }

    fn hand_over(&self, instance: &Instance) -> Option<Released> {
        let InstanceState::Running(addr) = instance.state() else {
            return None;
        };
        let process = self.process(instance)?;
        let pipes = match process.pipes.try_clone() {
            Ok(pipes) => pipes,
            Err(e) => {
                log::warn!("replica {}: cannot copy its pipes: {e}", instance.name());
                return None;
            }
        };
        Some(Released {
            record: ReplicaRecord {
                name: instance.name().to_owned(),
                deployment: process.deployment.clone(),
                addr,
                pid: process.pid,
                args: process.args.clone(),
            },
            pipes,
        })
    }

    fn detach(&self, instance: &Instance) {
        if let Some(process) = self.process(instance) {
            process.detach.notify_one();
        }
    }

    fn adopt(&self, replica: Released) -> Result<Arc<Instance>, ProvisionError> {
        adopted::adopt(replica, &self.events, &self.settings, &self.processes)
    }
}

/// Follows one replica process from spawn to exit (or until the next
/// gateway has taken it over).
async fn supervise(
    mut child: Child,
    instance: Arc<Instance>,
    settings: LocalSettings,
    processes: Arc<Processes>,
) {
    let handed_over = supervise_child(&mut child, &instance, &settings, &processes).await;
    unregister(&processes, instance.name());
    if handed_over {
        // tokio's Child cannot disarm kill_on_drop, and this gateway must
        // not kill what the next one serves with: forgetting the handle (a
        // pid and a flag, once per replica and upgrade) lets it go.
        std::mem::forget(child);
    }
}

/// Supervises until the replica is over (false) or handed over (true).
async fn supervise_child(
    child: &mut Child,
    instance: &Arc<Instance>,
    settings: &LocalSettings,
    processes: &Processes,
) -> bool {
    // Held, never written: closing it is how the replica learns we are gone.
    let _stdin = child.stdin.take();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        instance.set_state(InstanceState::Exited {
            reason: "no stdout or stderr pipe".into(),
        });
        return false;
    };
    let detached = processes.load().get(instance.name()).cloned();
    let last_words = tokio::spawn(pass_through(stderr));
    let startup = tokio::time::timeout(settings.start_timeout, announce(stdout));
    let outcome = tokio::select! {
        started = startup => match started {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!("not ready within {:?}", settings.start_timeout)),
        },
        status = child.wait() => Err(format!("exited before it was ready ({})", describe(status))),
        () = instance.stop_requested() => {
            terminate(child, instance, settings.stop_grace).await;
            instance.set_state(InstanceState::Stopped);
            return false;
        }
    };
    let addr = match outcome {
        Ok(addr) => addr,
        Err(reason) => {
            // Whatever state it is in, it will not serve: make sure it is gone.
            let _ = child.kill().await;
            let reason = with_last_words(reason, last_words).await;
            instance.set_state(InstanceState::Exited { reason });
            return false;
        }
    };
    instance.set_state(InstanceState::Running(addr));
    let detach = async {
        match &detached {
            Some(process) => process.detach.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => {
            let reason = with_last_words(describe(status), last_words).await;
            instance.set_state(InstanceState::Exited { reason });
            false
        }
        () = instance.stop_requested() => {
            terminate(child, instance, settings.stop_grace).await;
            instance.set_state(InstanceState::Stopped);
            false
        }
        () = detach => {
            // The next gateway supervises it now. Its state stays Running:
            // this gateway routes its last requests to it until it exits.
            log::info!("replica {} handed over to the next gateway", instance.name());
            true
        }
    }
}

/// Lines of a replica's stderr kept for its exit reason.
const LAST_WORDS: usize = 3;

/// Passes the replica's stderr through to the gateway's, line by line, and
/// returns its last lines once it closes.
async fn pass_through(stderr: impl AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut last = std::collections::VecDeque::with_capacity(LAST_WORDS);
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        if line.trim().is_empty() {
            continue;
        }
        if last.len() == LAST_WORDS {
            last.pop_front();
        }
        last.push_back(line);
    }
    last.into()
}

/// `reason`, followed by what the replica last said on stderr (the pipe
/// closes with the process; a grandchild holding it is not waited for).
async fn with_last_words(reason: String, words: tokio::task::JoinHandle<Vec<String>>) -> String {
    match tokio::time::timeout(Duration::from_secs(1), words).await {
        Ok(Ok(lines)) if !lines.is_empty() => format!("{reason}: {}", lines.join(" | ")),
        _ => reason,
    }
}

/// Reads the ready line, then waits for the readiness probe to pass.
/// Later stdout lines (there should be none) go to the log.
async fn announce(stdout: ChildStdout) -> Result<std::net::SocketAddr, String> {
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|e| format!("reading its output: {e}"))?
        .ok_or("closed its output before it was ready")?;
    let addr = config::ReadyLine::parse(&line)
        .map_err(|e| e.to_string())?
        .addr;
    tokio::spawn(log_lines(lines, addr));
    // The engine announces itself only once loaded and warmed up, so the
    // first probe normally passes; a few retries cover a slow accept.
    ready(addr).await.map(|()| addr)
}

/// Logs what a replica writes on stdout after its ready line.
async fn log_lines<R: tokio::io::AsyncBufRead + Unpin>(
    mut lines: tokio::io::Lines<R>,
    addr: std::net::SocketAddr,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        log::info!("replica {addr}: {line}");
    }
}

/// Probes the replica's readiness until it passes (a few tries, for a slow
/// accept).
async fn ready(addr: std::net::SocketAddr) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..50 {
        match health::probe(addr, Duration::from_secs(1)).await {
            Ok(()) => return Ok(()),
            Err(why) => last = why.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("readiness probe kept failing: {last}"))
}

/// SIGTERM (the engine drains its own in-flight requests), then SIGKILL
/// after the grace period.
async fn terminate(child: &mut Child, instance: &Instance, grace: Duration) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => log::info!("replica {} stopped ({})", instance.name(), describe(status)),
        Err(_) => {
            log::warn!(
                "replica {} ignored SIGTERM for {grace:?}; killing it",
                instance.name()
            );
            let _ = child.kill().await;
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
