//! A child process of a test: killed by its own pid and reaped when its
//! guard drops (never by name), its stderr kept in a file for failure
//! messages, its stdout kept open (a process that prints after its ready
//! line must not meet a closed pipe).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to print its ready line.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// A child process that is killed (by pid) and reaped when dropped.
pub struct Proc {
    child: Child,
    /// The address it serves on (a replica's, the gateway's predict
    /// listener), once known from its ready line.
    pub addr: SocketAddr,
    stdout: Option<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
    stderr: tempfile::NamedTempFile,
    what: String,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("what", &self.what)
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .finish()
    }
}

impl Proc {
    /// Starts `command` with stdout piped and stderr into a file; `what`
    /// names it in failure messages. `addr` is unspecified until set.
    pub fn spawn(command: Command, what: &str) -> Self {
        Self::spawn_inner(command, what, false)
    }

    /// Like [`Self::spawn`], with stdin a pipe the test holds until
    /// [`Self::close_stdin`] (or the drop).
    pub fn spawn_with_stdin(command: Command, what: &str) -> Self {
        Self::spawn_inner(command, what, true)
    }

    fn spawn_inner(mut command: Command, what: &str, stdin: bool) -> Self {
        let stderr = tempfile::Builder::new()
            .prefix("testkit-")
            .suffix(".stderr")
            .tempfile()
            .expect("a file for the child's stderr");
        let mut child = command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen the stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().map(BufReader::new);
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        self.stderr.path()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Reads its first stdout line (the ready line), at most `limit`:
    /// `Err` with its stderr when it exits, closes stdout or stays silent.
    pub fn read_line(&mut self, limit: Duration) -> Result<String, String> {
        let mut stdout = self
            .stdout
            .take()
            .ok_or_else(|| format!("{}: stdout already closed", self.what))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            let _ = tx.send((read, line, stdout));
        });
        match rx.recv_timeout(limit) {
            Ok((Ok(n), line, stdout)) if n > 0 => {
                self.stdout = Some(stdout);
                Ok(line)
            }
            Ok((read, _, _)) => {
                let status = self.wait_exit(Duration::from_secs(5));
                Err(format!(
                    "{} closed its stdout before a ready line ({read:?}, exit {status:?}); stderr:\n{}",
                    self.what,
                    self.stderr()
                ))
            }
            Err(_) => Err(format!(
                "{} printed no ready line within {limit:?}; stderr:\n{}",
                self.what,
                self.stderr()
            )),
        }
    }

    /// Closes its stdin (an end of file for the process).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Sends a signal by name (`TERM`, `INT`, `QUIT`) to this process only.
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Whether it has exited (and been reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `name` to process `pid` only (`kill -NAME PID`).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Whether process `pid` is running: a zombie has exited, only its parent
/// (init, once its gateway is gone) has yet to reap it.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

/// A workspace binary (`gateway`, `engine`, `loadtest`) of the build the
/// running test belongs to: test binaries live in `target/<profile>/deps/`,
/// the workspace's binaries one folder up. A test crate's own binary comes
/// from `CARGO_BIN_EXE_*`; the others exist once the workspace is built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let path = profile.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --workspace`, or `cargo build -p {name}`)",
        path.display()
    );
    path
}
