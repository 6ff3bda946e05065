//! `engine` replicas as child processes on port 0, ready when their ready
//! line (`config::ReadyLine`) says where they listen.

use std::process::Command;

use config::ReadyLine;

use crate::process::{Proc, READY_LIMIT, binary};

/// A running replica, killed by its pid when dropped.
#[derive(Debug)]
pub struct Replica {
    pub proc: Proc,
    /// `http://{addr}`.
    pub base: String,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Its `GET /info`.
    pub async fn info(&self) -> serde_json::Value {
        crate::get_json(&self.url("/info")).await
    }
}

/// A started replica whose ready line has not been read yet.
#[derive(Debug)]
pub struct Starting {
    proc: Proc,
}

impl Starting {
    /// Waits for the ready line (panics, with the replica's stderr, if it
    /// exits first).
    pub fn ready(&mut self) -> ReadyLine {
        let ready = read_ready(&mut self.proc);
        self.proc.addr = ready.addr;
        ready
    }

    /// The replica, once [`Self::ready`].
    pub fn into_replica(self) -> Replica {
        let base = format!("http://{}", self.proc.addr);
        Replica {
            proc: self.proc,
            base,
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

fn read_ready(proc: &mut Proc) -> ReadyLine {
    let line = proc
        .read_line(READY_LIMIT)
        .unwrap_or_else(|e| panic!("engine never became ready: {e}"));
    ReadyLine::parse(&line).unwrap_or_else(|e| panic!("engine: {e}"))
}

/// Starts `engine --replica-id ID` with `args` (listening on port 0 unless
/// they say `--listen`) without waiting for it.
pub fn spawn(replica_id: &str, args: &[&str]) -> Starting {
    let command = command(replica_id, args);
    Starting {
        proc: Proc::spawn(command, &format!("engine {replica_id}")),
    }
}

/// Like [`spawn`], with stdin a pipe the test holds
/// ([`Proc::close_stdin`]): for `--exit-on-stdin-eof`.
pub fn spawn_with_stdin(replica_id: &str, args: &[&str]) -> Starting {
    let command = command(replica_id, args);
    Starting {
        proc: Proc::spawn_with_stdin(command, &format!("engine {replica_id}")),
    }
}

fn command(replica_id: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary("engine"));
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command
        .args(["--replica-id", replica_id])
        .args(args)
        .env("RUST_LOG", "warn");
    command
}

/// Starts a replica with `args` and waits for its ready line, which must
/// name `backend`.
pub fn start(backend: &str, args: &[&str]) -> Replica {
    let mut starting = spawn("r7", args);
    let ready = starting.ready();
    assert_eq!(ready.backend, backend, "the replica's backend");
    starting.into_replica()
}

/// Starts a replica `replica_id` with `extra` arguments and waits for its
/// ready line; the process's `addr` is where it listens.
pub fn engine(replica_id: &str, extra: &[&str]) -> Proc {
    let mut starting = spawn(replica_id, extra);
    starting.ready();
    starting.proc
}

/// A KServe v2 infer answer in the binary tensor extension, after checking
/// it is a 200: its JSON head (the first `Inference-Header-Content-Length`
/// bytes) and the output bytes that follow it.
pub async fn v2_binary_answer(resp: reqwest::Response) -> (serde_json::Value, Vec<u8>) {
    assert_eq!(resp.status(), 200);
    let head_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    let head = serde_json::from_slice(&bytes[..head_len]).unwrap();
    (head, bytes[head_len..].to_vec())
}
