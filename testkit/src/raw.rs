//! A blocking raw HTTP/1 client for wire tests: it writes exact bytes and
//! reads responses one at a time off one connection, each read and write
//! bounded by [`IO_TIMEOUT`] so that a server that hangs fails the test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::replica::find_header;

/// The longest wait for any one read or write of the raw client: a response
/// that has not begun by then, or a close that has not come, fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    /// The status line, without its CRLF.
    pub line: String,
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The status line and body, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{:?} with body {:?}",
            self.line,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A blocking HTTP/1 client connection that writes exact bytes and reads
/// responses one at a time, so several can be read off one connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// Bytes read off the stream and not consumed yet.
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client over a connection made (and written to) already.
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` whole.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
    }

    /// Writes `bytes` whole, or says why not (the gateway may refuse and
    /// close before it read them all).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads what the stream has next into the buffer: how many bytes, 0 at
    /// the end of the stream.
    fn fill(&mut self) -> Result<usize, String> {
        let mut piece = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut piece) {
                Ok(n) => {
                    self.buf.extend_from_slice(&piece[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!("nothing arrived within {IO_TIMEOUT:?}"));
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Consumes the buffer up to and including the first `delimiter`.
    fn take_through(&mut self, delimiter: &[u8], what: &str) -> Result<Vec<u8>, String> {
        let mut searched = 0;
        loop {
            if let Some(at) = self.buf[searched..]
                .windows(delimiter.len())
                .position(|w| w == delimiter)
            {
                let end = searched + at + delimiter.len();
                return Ok(self.buf.drain(..end).collect());
            }
            searched = self.buf.len().saturating_sub(delimiter.len() - 1);
            match self.fill() {
                Ok(0) if self.buf.is_empty() => {
                    return Err(format!("the connection closed before {what}"));
                }
                Ok(0) => {
                    return Err(format!(
                        "the connection closed inside {what}, after {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for {what}: {e}")),
            }
        }
    }

    /// Consumes exactly `n` bytes.
    fn take_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "the connection closed inside {what}: {} of {n} bytes",
                        self.buf.len()
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for {what}: {e}")),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Consumes everything up to the end of the stream.
    fn take_to_end(&mut self, what: &str) -> Result<Vec<u8>, String> {
        loop {
            match self.fill() {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for the end of {what}: {e}")),
            }
        }
    }

    /// A chunked body, decoded; trailers are skipped.
    fn take_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.take_through(b"\r\n", "a chunk size line")?;
            let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?} in a response"))?;
            if size == 0 {
                loop {
                    let trailer = self.take_through(b"\r\n", "the trailers")?;
                    if trailer == b"\r\n" {
                        return Ok(body);
                    }
                }
            }
            body.extend(self.take_exact(size, "a chunk")?);
            if self.take_exact(2, "a chunk's CRLF")? != b"\r\n" {
                return Err("a chunk not followed by CRLF".to_owned());
            }
        }
    }

    /// The next response, interim ones included; its body is read unless it
    /// answers a HEAD (`to_head`) or cannot have one.
    pub fn try_response(&mut self, to_head: bool) -> Result<Response, String> {
        let head = self.take_through(b"\r\n\r\n", "a response")?;
        let head = String::from_utf8(head)
            .map_err(|e| format!("a response head that is not UTF-8: {e}"))?;
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        let line = lines.next().unwrap_or("").to_owned();
        let status = line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        for field in lines {
            let (name, value) = field
                .split_once(':')
                .ok_or_else(|| format!("bad response header line {field:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let chunked = find_header(&headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if to_head || status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            self.take_chunked()?
        } else if let Some(length) = find_header(&headers, "content-length") {
            let length = length
                .parse()
                .map_err(|_| format!("bad response Content-Length {length:?}"))?;
            self.take_exact(length, "a response body")?
        } else {
            self.take_to_end("a response body delimited by the close")?
        };
        Ok(Response {
            line,
            status,
            headers,
            body,
        })
    }

    /// The next response (not to a HEAD); fails the test naming `what` if
    /// none comes.
    pub fn response(&mut self, what: &str) -> Response {
        self.try_response(false)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Whether the server closed the connection (a reset counts) with
    /// nothing more sent; otherwise what it did instead.
    pub fn closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "more bytes followed the response: {:?}",
                String::from_utf8_lossy(&self.buf)
            ));
        }
        let mut piece = [0u8; 1024];
        loop {
            return match self.stream.read(&mut piece) {
                Ok(0) => Ok(()),
                Ok(n) => Err(format!(
                    "more bytes followed the response: {:?}",
                    String::from_utf8_lossy(&piece[..n])
                )),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
                    format!("the connection was still open {IO_TIMEOUT:?} after the response"),
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(format!("read failed: {e}")),
            };
        }
    }

    pub fn assert_closed(&mut self, what: &str) {
        if let Err(e) = self.closed() {
            panic!("{what}: expected the server to close the connection, but {e}");
        }
    }
}
