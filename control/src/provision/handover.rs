//! Local replicas passed from a gateway process to its successor during a
//! binary upgrade, so a warm deployment stays warm.
//!
//! A replica is an `engine` process tied to its gateway by three pipes: its
//! stdin (it exits when that closes, so a gateway that dies leaves no
//! orphan), its stdout and its stderr. Handing it over means giving the
//! successor those pipes (SCM_RIGHTS over a Unix socket) with a record of
//! what it is (deployment, address, pid, the arguments it was started
//! with). Once the successor holds the stdin pipe, the old process may exit
//! without the replica noticing, and the no-orphan rule still holds: if the
//! successor dies, the pipe closes.
//!
//! The socket is `SOCK_SEQPACKET`, so every message keeps its bounds and
//! its descriptors: first a [`Header`], then one message per replica, each a
//! JSON [`ReplicaRecord`] with its three pipes. The successor listens
//! ([`Receiver`]), the running gateway connects and sends ([`Sender`]).
//! Both ends are blocking: the successor receives before its runtimes start,
//! the running gateway sends from a blocking task.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    sockopt,
};
use serde::{Deserialize, Serialize};

/// The format of the messages; a successor refuses any other.
const VERSION: u32 = 1;

/// Largest message: a record is a few hundred bytes plus its arguments.
const MAX_MESSAGE: usize = 64 * 1024;

/// A running replica, as its next gateway needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// `model/deployment#n`: its `--replica-id`, kept by the successor.
    pub name: String,
    /// `model/deployment`: the deployment it belongs to.
    pub deployment: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id (the successor watches and stops it by a pidfd).
    pub pid: i32,
    /// The engine arguments it was started with (`EngineSettings::to_args`,
    /// as text): the successor keeps it only if its config asks for the same.
    pub args: Vec<String>,
}

/// A replica's pipes, as the gateway holds them.
#[derive(Debug)]
pub struct Pipes {
    /// The write end of its stdin: it exits when every copy is closed.
    pub stdin: OwnedFd,
    /// The read end of its stdout.
    pub stdout: OwnedFd,
    /// The read end of its stderr.
    pub stderr: OwnedFd,
}

impl Pipes {
    /// Another copy of each descriptor (same pipes).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            stdin: self.stdin.try_clone()?,
            stdout: self.stdout.try_clone()?,
            stderr: self.stderr.try_clone()?,
        })
    }
}

/// One replica handed over: its record and its pipes.
#[derive(Debug)]
pub struct Released {
    /// What it is.
    pub record: ReplicaRecord,
    /// How it is held.
    pub pipes: Pipes,
}

/// The first message: who hands over, and how many replicas follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `VERSION`.
    pub version: u32,
    /// The process handing over.
    pub from_pid: u32,
    /// Replica messages that follow.
    pub replicas: usize,
}

/// What a successor received.
#[derive(Debug)]
pub struct Handover {
    /// The process that handed over.
    pub from_pid: u32,
    /// Its replicas.
    pub replicas: Vec<Released>,
}

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The socket could not be created, bound, connected or used.
    #[error("handover socket {path}: {what}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Nobody handed over in time.
    #[error(
        "no running gateway handed over within {waited:?} on {path}: send SIGQUIT to the running gateway (its listeners and upgrade socket must match this config)"
    )]
    TimedOut {
        /// The socket's path.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A message that is not what the protocol says.
    #[error("handover socket {path}: {why}")]
    Protocol {
        /// The socket's path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// The successor's end: a listening socket at a path, removed when dropped.
#[derive(Debug)]
pub struct Receiver {
    path: PathBuf,
    socket: OwnedFd,
}

impl Receiver {
    /// Listens at `path` (a stale socket file there is replaced), readable
    /// and writable by this user only.
    pub fn listen(path: &Path) -> Result<Self, HandoverError> {
        let fail = |what, source: rustix::io::Errno| HandoverError::Socket {
            path: path.to_owned(),
            what,
            source: source.into(),
        };
        let addr = SocketAddrUnix::new(path).map_err(|e| fail("address", e))?;
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail("socket", e))?;
        match rustix::fs::unlink(path) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(fail("removing the stale socket", e)),
        }
        rustix::net::bind(&socket, &addr).map_err(|e| fail("bind", e))?;
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o600))
            .map_err(|e| fail("chmod", e))?;
        rustix::net::listen(&socket, 1).map_err(|e| fail("listen", e))?;
        Ok(Self {
            path: path.to_owned(),
            socket,
        })
    }

    /// Waits up to `wait` for the running gateway to connect, then reads
    /// its whole handover (each message within `step`).
    pub fn receive(&self, wait: Duration, step: Duration) -> Result<Handover, HandoverError> {
        let fail = |what, source: rustix::io::Errno| HandoverError::Socket {
            path: self.path.clone(),
            what,
            source: source.into(),
        };
        if !wait_readable(&self.socket, wait).map_err(|e| fail("poll", e))? {
            return Err(HandoverError::TimedOut {
                path: self.path.clone(),
                waited: wait,
            });
        }
        let conn = rustix::net::accept_with(&self.socket, SocketFlags::CLOEXEC)
            .map_err(|e| fail("accept", e))?;
        sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(step))
            .map_err(|e| fail("timeout", e))?;
        let (header, fds) = self.message(&conn)?;
        let header: Header = self.parse(&header)?;
        if header.version != VERSION || !fds.is_empty() {
            return Err(self.protocol(format!(
                "handover format {} (this gateway reads {VERSION})",
                header.version
            )));
        }
        let mut replicas = Vec::with_capacity(header.replicas);
        for _ in 0..header.replicas {
            let (record, fds) = self.message(&conn)?;
            let record: ReplicaRecord = self.parse(&record)?;
            let Ok([stdin, stdout, stderr]) = <[OwnedFd; 3]>::try_from(fds) else {
                return Err(
                    self.protocol(format!("replica {} came without its pipes", record.name))
                );
            };
            replicas.push(Released {
                record,
                pipes: Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
            });
        }
        Ok(Handover {
            from_pid: header.from_pid,
            replicas,
        })
    }

    /// One message and the descriptors that came with it.
    fn message(&self, conn: &OwnedFd) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoverError> {
        let mut bytes = vec![0; MAX_MESSAGE];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            conn,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| HandoverError::Socket {
            path: self.path.clone(),
            what: "receive",
            source: e.into(),
        })?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if received.bytes == 0 {
            return Err(self.protocol("the running gateway closed the handover early".into()));
        }
        if received
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        {
            return Err(self.protocol("a message was truncated".into()));
        }
        bytes.truncate(received.bytes);
        Ok((bytes, fds))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, HandoverError> {
        serde_json::from_slice(bytes).map_err(|e| self.protocol(format!("bad message: {e}")))
    }

    fn protocol(&self, why: String) -> HandoverError {
        HandoverError::Protocol {
            path: self.path.clone(),
            why,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Nobody else may connect to a successor that is done listening.
        let _ = rustix::fs::unlink(&self.path);
    }
}

/// Whether `fd` turned readable within `wait`.
fn wait_readable(fd: &OwnedFd, wait: Duration) -> rustix::io::Result<bool> {
    let timeout = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The running gateway's end: connected to a successor that listens.
#[derive(Debug)]
pub struct Sender {
    path: PathBuf,
    conn: OwnedFd,
}

impl Sender {
    /// Connects to a successor listening at `path`; fails at once (not
    /// found, refused) when none does.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, HandoverError> {
        let fail = |what, source: rustix::io::Errno| HandoverError::Socket {
            path: path.to_owned(),
            what,
            source: source.into(),
        };
        let addr = SocketAddrUnix::new(path).map_err(|e| fail("address", e))?;
        let conn = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail("socket", e))?;
        rustix::net::connect(&conn, &addr).map_err(|e| fail("connect", e))?;
        sockopt::set_socket_timeout(&conn, sockopt::Timeout::Send, Some(timeout))
            .map_err(|e| fail("timeout", e))?;
        Ok(Self {
            path: path.to_owned(),
            conn,
        })
    }

    /// Sends the header and every replica with its pipes. The descriptors
    /// are copied into the message: this process keeps its own.
    pub fn send(&self, from_pid: u32, replicas: &[Released]) -> Result<(), HandoverError> {
        let header = Header {
            version: VERSION,
            from_pid,
            replicas: replicas.len(),
        };
        self.send_one(&to_json(&header), &[])?;
        for replica in replicas {
            let pipes = &replica.pipes;
            self.send_one(
                &to_json(&replica.record),
                &[
                    pipes.stdin.as_fd(),
                    pipes.stdout.as_fd(),
                    pipes.stderr.as_fd(),
                ],
            )?;
        }
        Ok(())
    }

    fn send_one(
        &self,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(), HandoverError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(HandoverError::Protocol {
                path: self.path.clone(),
                why: "too many descriptors for one message".into(),
            });
        }
        if bytes.len() > MAX_MESSAGE {
            return Err(HandoverError::Protocol {
                path: self.path.clone(),
                why: format!("a message of {} bytes is too long", bytes.len()),
            });
        }
        rustix::net::sendmsg(
            &self.conn,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| HandoverError::Socket {
            path: self.path.clone(),
            what: "send",
            source: e.into(),
        })?;
        Ok(())
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("handover messages serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipes() -> (Pipes, [OwnedFd; 3]) {
        let (a_read, a_write) = std::io::pipe().unwrap();
        let (b_read, b_write) = std::io::pipe().unwrap();
        let (c_read, c_write) = std::io::pipe().unwrap();
        (
            Pipes {
                stdin: a_write.into(),
                stdout: b_read.into(),
                stderr: c_read.into(),
            },
            [a_read.into(), b_write.into(), c_write.into()],
        )
    }

    #[test]
    fn replicas_and_their_pipes_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.replicas.sock");
        let receiver = Receiver::listen(&path).unwrap();
        let (pipes, [stdin_read, stdout_write, _stderr_write]) = pipes();
        let record = ReplicaRecord {
            name: "m/d#3".into(),
            deployment: "m/d".into(),
            addr: "127.0.0.1:4000".parse().unwrap(),
            pid: 42,
            args: vec!["--backend".into(), "synthetic".into()],
        };
        let sender = Sender::connect(&path, Duration::from_secs(1)).unwrap();
        sender
            .send(
                7,
                &[Released {
                    record: record.clone(),
                    pipes,
                }],
            )
            .unwrap();
        drop(sender);
        let handover = receiver
            .receive(Duration::from_secs(1), Duration::from_secs(1))
            .unwrap();
        assert_eq!(handover.from_pid, 7);
        assert_eq!(handover.replicas.len(), 1);
        let got = &handover.replicas[0];
        assert_eq!(got.record, record);
        // The received descriptors are the same pipes.
        rustix::io::write(&stdout_write, b"hi").unwrap();
        let mut buf = [0; 2];
        rustix::io::read(&got.pipes.stdout, &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        rustix::io::write(&got.pipes.stdin, b"x").unwrap();
        rustix::io::read(&stdin_read, &mut buf[..1]).unwrap();
        assert_eq!(&buf[..1], b"x");
        drop(receiver);
        assert!(!path.exists(), "the socket is removed");
    }

    #[test]
    fn nobody_handing_over_times_out_and_nobody_listening_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.replicas.sock");
        assert!(Sender::connect(&path, Duration::from_secs(1)).is_err());
        let receiver = Receiver::listen(&path).unwrap();
        let err = receiver
            .receive(Duration::from_millis(50), Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, HandoverError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn a_sender_that_leaves_early_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.replicas.sock");
        let receiver = Receiver::listen(&path).unwrap();
        drop(Sender::connect(&path, Duration::from_secs(1)).unwrap());
        let err = receiver
            .receive(Duration::from_secs(1), Duration::from_secs(1))
            .unwrap_err();
        assert!(
            err.to_string().contains("closed the handover early"),
            "{err}"
        );
    }
}
