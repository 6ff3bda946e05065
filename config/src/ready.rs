//! The one line a replica prints on stdout once it serves, so whoever
//! started it (a provisioner, a test) learns its address without picking
//! ports: `{"event":"ready","addr":"127.0.0.1:PORT","backend":"NAME"}`.

use std::io::BufRead;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The ready announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always `ready`.
    pub event: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The backend's name.
    pub backend: String,
}

/// Why no ready line could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyLineError {
    /// Reading stdout failed.
    #[error("reading the replica's output: {0}")]
    Io(#[from] std::io::Error),
    /// The replica exited (or closed stdout) before it was ready.
    #[error("the replica closed its output before it was ready")]
    Closed,
    /// The first line is not a ready line.
    #[error("unexpected first line from the replica: {0:?}")]
    Malformed(String),
}

impl ReadyLine {
    /// The line for a replica bound to `addr`.
    pub fn new(addr: SocketAddr, backend: &str) -> Self {
        Self {
            event: "ready".to_owned(),
            addr,
            backend: backend.to_owned(),
        }
    }

    /// Reads and parses the first line of a replica's stdout.
    pub fn read_from(mut stdout: impl BufRead) -> Result<Self, ReadyLineError> {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            return Err(ReadyLineError::Closed);
        }
        Self::parse(&line)
    }

    /// Parses one line (with or without its newline).
    pub fn parse(line: &str) -> Result<Self, ReadyLineError> {
        match serde_json::from_str::<ReadyLine>(line) {
            Ok(ready) if ready.event == "ready" => Ok(ready),
            _ => Err(ReadyLineError::Malformed(line.trim_end().to_owned())),
        }
    }
}

impl std::fmt::Display for ReadyLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_lines() {
        let line = ReadyLine::new("127.0.0.1:4000".parse().unwrap(), "synthetic");
        let text = format!("{line}\nlater output\n");
        assert_eq!(ReadyLine::read_from(text.as_bytes()).unwrap(), line);
        assert!(matches!(
            ReadyLine::read_from(&b""[..]),
            Err(ReadyLineError::Closed)
        ));
        assert!(matches!(
            ReadyLine::read_from(&b"panic!\n"[..]),
            Err(ReadyLineError::Malformed(_))
        ));
    }
}
