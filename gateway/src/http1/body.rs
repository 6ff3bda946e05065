//! Body framing (RFC 9112 section 6 and 7.1): a fixed length, chunked, or
//! until the connection closes, decoded out of a read buffer one piece at a
//! time without copying. The same decoder reads the client's request bodies
//! and the replicas' response bodies.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line or trailer line.
const MAX_LINE: usize = 4 * 1024;

/// A body whose framing is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A chunk-size line that is not hex digits (with extensions).
    #[error("bad chunk size")]
    ChunkSize,
    /// A chunk's data not followed by CRLF.
    #[error("no CRLF after chunk data")]
    ChunkEnd,
    /// A chunk-size or trailer line longer than allowed.
    #[error("chunk line too long")]
    LineTooLong,
    /// A chunk-size or trailer line with a bare CR or LF: peers that end
    /// lines at a lone LF would frame the body differently (smuggling).
    #[error("bare CR or LF in a chunk line")]
    BareLineEnd,
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data, never empty.
    Piece(Bytes),
    /// The buffer holds too little: read more, then decode again.
    NeedMore,
    /// The body is complete.
    Done,
}

/// Where a body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDecoder(State);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
    /// Complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

impl BodyDecoder {
    /// A body of `n` bytes.
    pub fn length(n: u64) -> Self {
        Self(if n == 0 {
            State::Done
        } else {
            State::Length(n)
        })
    }

    /// A chunked body.
    pub fn chunked() -> Self {
        Self(State::Chunked(Chunk::Size))
    }

    /// A body that ends when the connection does.
    pub fn until_close() -> Self {
        Self(State::UntilClose)
    }

    /// No body.
    pub fn none() -> Self {
        Self(State::Done)
    }

    /// Body bytes announced and not yet decoded: what remains of a
    /// `Content-Length`, or of the chunk being read (0 when unknown).
    pub fn announced(&self) -> u64 {
        match self.0 {
            State::Length(n) | State::Chunked(Chunk::Data(n)) => n,
            _ => 0,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.0 == State::Done
    }

    /// Whether the body ends with the connection (so a close is its end,
    /// not a cut).
    pub fn ends_at_close(&self) -> bool {
        self.0 == State::UntilClose
    }

    /// Marks a body that ends at close as ended (the connection closed).
    pub fn closed(&mut self) {
        if self.0 == State::UntilClose {
            self.0 = State::Done;
        }
    }

    /// Takes the next piece of the body off the front of `buf`, consuming
    /// its framing; what follows the body stays in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.0 {
                State::Done => return Ok(Decoded::Done),
                State::Length(_) | State::UntilClose | State::Chunked(Chunk::Data(_))
                    if buf.is_empty() =>
                {
                    return Ok(Decoded::NeedMore);
                }
                State::Length(remaining) => {
                    let n = (buf.len() as u64).min(remaining);
                    self.0 = State::Length(remaining - n);
                    if remaining == n {
                        self.0 = State::Done;
                    }
                    return Ok(Decoded::Piece(buf.split_to(n as usize).freeze()));
                }
                State::UntilClose => return Ok(Decoded::Piece(buf.split().freeze())),
                State::Chunked(Chunk::Data(remaining)) => {
                    let n = (buf.len() as u64).min(remaining);
                    self.0 = State::Chunked(if remaining == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(remaining - n)
                    });
                    return Ok(Decoded::Piece(buf.split_to(n as usize).freeze()));
                }
                State::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.0 = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.0 = State::Chunked(match chunk_size(&line)? {
                        0 => Chunk::Trailers,
                        size => Chunk::Data(size),
                    });
                }
                State::Chunked(Chunk::Trailers) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.0 = State::Done;
                    }
                }
            }
        }
    }
}

/// A CRLF-terminated line at the start of `buf`, without its CRLF. A CR
/// or LF anywhere else in it is an error, not a line end.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, BodyError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > MAX_LINE + 1 => Err(BodyError::LineTooLong),
        Some(0) => Err(BodyError::BareLineEnd),
        Some(end) => {
            if buf[end - 1] != b'\r' || buf[..end - 1].contains(&b'\r') {
                return Err(BodyError::BareLineEnd);
            }
            let line = buf.split_to(end - 1);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(BodyError::LineTooLong),
        None => Ok(None),
    }
}

/// The size in a chunk-size line: hex digits, then optional whitespace and
/// extensions (`1a ;ext=x`). Nothing may come before the digits: a lenient
/// reading here is what request smuggling feeds on.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::ChunkSize);
    }
    Ok(digits.iter().fold(0u64, |n, d| {
        n * 16 + u64::from(char::from(*d).to_digit(16).unwrap_or(0))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut BodyDecoder, buf: &mut BytesMut) -> Result<(Vec<u8>, bool), BodyError> {
        let mut out = Vec::new();
        loop {
            match decoder.decode(buf)? {
                Decoded::Piece(piece) => {
                    assert!(!piece.is_empty());
                    out.extend_from_slice(&piece);
                }
                Decoded::NeedMore => return Ok((out, false)),
                Decoded::Done => return Ok((out, true)),
            }
        }
    }

    #[test]
    fn a_length_body_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"helloGET /"[..]);
        let mut decoder = BodyDecoder::length(5);
        assert_eq!(
            drain(&mut decoder, &mut buf).unwrap(),
            (b"hello".to_vec(), true)
        );
        assert_eq!(&buf[..], b"GET /");
    }

    #[test]
    fn chunks_split_anywhere_decode_the_same() {
        let wire = b"5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nx-trailer: y\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut decoder = BodyDecoder::chunked();
            let mut buf = BytesMut::from(&wire[..split]);
            let (mut body, _) = drain(&mut decoder, &mut buf).unwrap();
            buf.extend_from_slice(&wire[split..]);
            let (rest, done) = drain(&mut decoder, &mut buf).unwrap();
            body.extend(rest);
            assert!(done, "split at {split}");
            assert_eq!(body, b"hello world");
            assert_eq!(&buf[..], b"NEXT");
        }
    }

    #[test]
    fn broken_chunks_are_errors() {
        for (wire, error) in [
            (&b"zz\r\n"[..], BodyError::ChunkSize),
            (b" 5\r\nhello\r\n", BodyError::ChunkSize),
            (b"\r\n", BodyError::ChunkSize),
            (b"5\r\nhelloXX", BodyError::ChunkEnd),
            (b"1234567890abcdef0\r\n", BodyError::ChunkSize),
            (b"5;a\nb\r\nhello\r\n", BodyError::BareLineEnd),
            (b"5\nhello\n0\n\n", BodyError::BareLineEnd),
            (b"5;a\rb\r\nhello\r\n", BodyError::BareLineEnd),
            (b"\n", BodyError::BareLineEnd),
        ] {
            let mut buf = BytesMut::from(wire);
            assert_eq!(
                drain(&mut BodyDecoder::chunked(), &mut buf),
                Err(error),
                "{}",
                wire.escape_ascii()
            );
        }
        let mut long = BytesMut::from(&[b'1'; MAX_LINE + 2][..]);
        assert_eq!(
            drain(&mut BodyDecoder::chunked(), &mut long),
            Err(BodyError::LineTooLong)
        );
    }

    #[test]
    fn until_close_takes_everything() {
        let mut decoder = BodyDecoder::until_close();
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            drain(&mut decoder, &mut buf).unwrap(),
            (b"abc".to_vec(), false)
        );
        assert!(decoder.ends_at_close());
        decoder.closed();
        assert!(decoder.is_done());
    }
}
