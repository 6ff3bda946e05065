//! The one line a process prints on stdout once it serves, so whoever
//! started it (a provisioner, a test, a script) learns its addresses without
//! picking ports. A replica:
//! `{"event":"ready","addr":"127.0.0.1:PORT","backend":"NAME"}`; the gateway:
//! `{"event":"ready","predict":"127.0.0.1:PORT","admin":"127.0.0.1:PORT"}`
//! (with `"tls":"..."` when it has a TLS listener).

use std::io::BufRead;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `read_from`, `parse` and `Display` (one line of JSON) for an
/// announcement type with an `event` field.
macro_rules! announcement {
    ($type:ty, $who:literal) => {
        impl $type {
            #[doc = concat!("Reads and parses the first line of ", $who, " stdout.")]
            pub fn read_from(stdout: impl BufRead) -> Result<Self, ReadyLineError> {
                read_first(stdout, |ready: &Self| ready.event == "ready")
            }

            /// Parses one line (with or without its newline).
            pub fn parse(line: &str) -> Result<Self, ReadyLineError> {
                parse_ready(line, |ready: &Self| ready.event == "ready")
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
                f.write_str(&json)
            }
        }
    };
}

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

/// The gateway's ready announcement: the addresses its listeners are bound
/// to (a port 0 in the config replaced by the one the system chose).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReady {
    /// Always `ready`.
    pub event: String,
    /// The predict listener.
    pub predict: SocketAddr,
    /// The admin listener (health, `/metrics`, the management API).
    pub admin: SocketAddr,
    /// The TLS predict listener, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SocketAddr>,
}

impl GatewayReady {
    /// The line for a gateway whose listeners are bound to these addresses.
    pub fn new(predict: SocketAddr, admin: SocketAddr, tls: Option<SocketAddr>) -> Self {
        Self {
            event: "ready".to_owned(),
            predict,
            admin,
            tls,
        }
    }
}

announcement!(GatewayReady, "the gateway's");

/// Reads the first line of `stdout` and parses it as a `T` that `is_ready`.
fn read_first<T: DeserializeOwned>(
    mut stdout: impl BufRead,
    is_ready: impl Fn(&T) -> bool,
) -> Result<T, ReadyLineError> {
    let mut line = String::new();
    if stdout.read_line(&mut line)? == 0 {
        return Err(ReadyLineError::Closed);
    }
    parse_ready(&line, is_ready)
}

fn parse_ready<T: DeserializeOwned>(
    line: &str,
    is_ready: impl Fn(&T) -> bool,
) -> Result<T, ReadyLineError> {
    match serde_json::from_str::<T>(line) {
        Ok(ready) if is_ready(&ready) => Ok(ready),
        _ => Err(ReadyLineError::Malformed(line.trim_end().to_owned())),
    }
}

/// Why no ready line could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyLineError {
    /// Reading stdout failed.
    #[error("reading the process's output: {0}")]
    Io(#[from] std::io::Error),
    /// The process exited (or closed stdout) before it was ready.
    #[error("the process closed its output before it was ready")]
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
}

announcement!(ReadyLine, "a replica's");

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

    #[test]
    fn gateway_line_round_trips_with_and_without_tls() {
        let plain = GatewayReady::new(
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:4001".parse().unwrap(),
            None,
        );
        assert_eq!(
            plain.to_string(),
            r#"{"event":"ready","predict":"127.0.0.1:4000","admin":"127.0.0.1:4001"}"#
        );
        assert_eq!(GatewayReady::parse(&plain.to_string()).unwrap(), plain);
        let tls = GatewayReady {
            tls: Some("127.0.0.1:4443".parse().unwrap()),
            ..plain
        };
        let text = format!("{tls}\n");
        assert_eq!(GatewayReady::read_from(text.as_bytes()).unwrap(), tls);
        // A replica's line is not a gateway's.
        let replica = ReadyLine::new("127.0.0.1:4000".parse().unwrap(), "synthetic");
        assert!(matches!(
            GatewayReady::parse(&replica.to_string()),
            Err(ReadyLineError::Malformed(_))
        ));
    }
}
