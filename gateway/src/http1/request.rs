//! A client's request head, parsed once: httparse finds the fields, this
//! module holds them as offsets into the head's own bytes (no header map,
//! no copies) and applies the framing rules that keep requests from being
//! smuggled: one `Host`, `Content-Length` values that agree, a final
//! `chunked` coding whenever `Transfer-Encoding` is present (which then
//! overrides `Content-Length` and closes the connection afterwards), none
//! on HTTP/1.0, and an absolute-form target that agrees with `Host`.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};

use super::{BodyDecoder, Span, connection_tokens, content_length};

/// Most header fields in a request head.
const MAX_FIELDS: usize = 128;

/// How large a request head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The whole head, request line and fields (431 beyond it).
    pub max_head_bytes: usize,
    /// The request target (414 beyond it).
    pub max_uri_bytes: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x request head.
    #[error("malformed request head")]
    Malformed,
    /// A request target that is neither a path nor an http(s) URL.
    #[error("unsupported request target")]
    Target,
    /// Longer than its limit.
    #[error("request head too large")]
    TooLarge,
    /// A request target longer than its limit.
    #[error("request target too long")]
    UriTooLong,
    /// More than the fields allowed.
    #[error("too many header fields")]
    TooManyFields,
    /// More than one `Host`, userinfo in it, or one that differs from the
    /// target's authority.
    #[error("bad or conflicting Host")]
    Host,
    /// A `Content-Length` that is not one number.
    #[error("bad or conflicting Content-Length")]
    ContentLength,
    /// A `Transfer-Encoding` whose final coding is not `chunked`, that
    /// applies `chunked` twice, or one on an HTTP/1.0 request.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// A transfer coding besides `chunked` (`gzip, chunked`): the gateway
    /// decodes none, and passing the body on still coded would mislead the
    /// replica (501, as nginx and Envoy answer).
    #[error("transfer codings other than chunked are not implemented")]
    CodingNotImplemented,
    /// An HTTP/1.1 request without `Host` (RFC 9112 3.2: 400).
    #[error("HTTP/1.1 request without Host")]
    NoHost,
    /// Both `Transfer-Encoding` and `Content-Length`: two framings, the
    /// shape of request smuggling (refused, as nginx and Envoy do).
    #[error("Transfer-Encoding together with Content-Length")]
    TwoFramings,
    /// More than one `Authorization`.
    #[error("more than one Authorization header")]
    TwoKeys,
    /// The head did not arrive in time.
    #[error("request head timed out")]
    Timeout,
    /// The client closed the connection mid-head.
    #[error("connection closed mid-head")]
    Cut,
}

impl HeadError {
    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
            HeadError::Timeout => StatusCode::REQUEST_TIMEOUT,
            HeadError::CodingNotImplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The transfer codings a request lists, across its `Transfer-Encoding`
/// fields.
#[derive(Debug, Default, Clone, Copy)]
struct Codings {
    /// Times `chunked` is listed (more than once is an error: RFC 9112 6.1).
    chunked: u32,
    /// Other codings listed.
    others: u32,
    /// The last coding is `chunked` (the one that frames the body).
    last_chunked: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            // Parameters (`;q=...`) make a coding something else again.
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if chunked {
                self.chunked += 1;
            } else {
                self.others += 1;
            }
            self.last_chunked = chunked;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: Span,
    value: Span,
}

/// A request head. Kept by its connection and refilled for each request,
/// so the field list is allocated once per connection.
#[derive(Debug)]
pub struct RequestHead {
    raw: Bytes,
    method: Method,
    version: Version,
    /// The path, `None` for an absolute-form target without one (`/`).
    path: Option<Span>,
    query: Option<Span>,
    /// The absolute-form target's authority, or HTTP/2's `:authority`.
    authority: Option<Span>,
    fields: Vec<Field>,
    content_length: Option<u64>,
    chunked: bool,
    /// The client keeps the connection open after this request.
    keep_alive: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        Self {
            raw: Bytes::new(),
            method: Method::GET,
            version: Version::HTTP_11,
            path: None,
            query: None,
            authority: None,
            fields: Vec::new(),
            content_length: None,
            chunked: false,
            keep_alive: true,
        }
    }
}

/// Decides when a partial head is worth parsing again. Parsing after every
/// read would cost time quadratic in the head's size for a client that
/// trickles it a byte at a time; this parses once a blank line (the head's
/// end) has arrived, and otherwise only when the buffer has doubled since
/// the last parse or outgrown the head limit, so a malformed or oversized
/// head is still refused early, at linear cost in all.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadScan {
    /// Bytes already searched for the blank line.
    scanned: usize,
    /// The buffer's length at the last parse (0: not parsed yet).
    parsed: usize,
}

impl HeadScan {
    /// Whether `buf`, which has grown since the last call, should be
    /// parsed now.
    pub fn should_parse(&mut self, buf: &[u8], limits: HeadLimits) -> bool {
        // A blank line that straddles the old end starts at most two bytes
        // before it. The search runs only when nothing else calls for a
        // parse: not for a head's first read (usually the whole head),
        // which is parsed anyway; a parse that finds the head incomplete
        // has seen no blank line ending it.
        let new = &buf[self.scanned.saturating_sub(2).min(buf.len())..];
        self.scanned = buf.len();
        let due = self.parsed == 0
            || buf.len() >= self.parsed.saturating_mul(2)
            || buf.len() > limits.max_head_bytes
            || ends_head(new);
        if due {
            self.parsed = buf.len();
        }
        due
    }
}

/// Whether `bytes` hold a blank line (`\n\n` or `\n\r\n`).
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && matches!(&bytes[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

impl RequestHead {
    /// Takes a complete request head off the front of `buf` into `self`;
    /// `false` while `buf` holds only part of one.
    pub fn parse(&mut self, buf: &mut BytesMut, limits: HeadLimits) -> Result<bool, HeadError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
                return Err(partial_too_large(buf, limits));
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(_) => return Err(HeadError::Malformed),
        };
        if req.path.is_some_and(|p| p.len() > limits.max_uri_bytes) {
            return Err(HeadError::UriTooLong);
        }
        if len > limits.max_head_bytes {
            return Err(HeadError::TooLarge);
        }
        let base = buf.as_ptr();
        self.method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| HeadError::Malformed)?;
        self.version = match req.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        self.fields.clear();
        self.fields.extend(req.headers.iter().map(|h| Field {
            name: Span::of(base, h.name.as_bytes()),
            value: Span::of(base, h.value),
        }));
        let target = Span::of(base, req.path.unwrap_or_default().as_bytes());
        self.raw = buf.split_to(len).freeze();
        self.read_target(target)?;
        self.check_fields()
            .inspect_err(|_| self.keep_alive = false)?;
        Ok(true)
    }

    /// Splits the request target into path, query and authority.
    fn read_target(&mut self, target: Span) -> Result<(), HeadError> {
        let bytes = target.get(&self.raw);
        let (authority, path_from) = if bytes.starts_with(b"/") {
            (None, target.start)
        } else {
            let rest = [&b"http://"[..], b"https://"]
                .iter()
                .find(|scheme| {
                    bytes.len() > scheme.len() && bytes[..scheme.len()].eq_ignore_ascii_case(scheme)
                })
                .map(|scheme| scheme.len())
                .ok_or(HeadError::Target)?;
            let tail = &bytes[rest..];
            let end = tail
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(tail.len());
            let authority = &tail[..end];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(HeadError::Host);
            }
            let start = target.start + rest as u32;
            let span = Span {
                start,
                end: start + end as u32,
            };
            (Some(span), span.end)
        };
        self.authority = authority;
        let rest = Span {
            start: path_from,
            end: target.end,
        };
        let bytes = rest.get(&self.raw);
        // A fragment is the client's own business.
        let end = bytes.iter().position(|b| *b == b'#').unwrap_or(bytes.len()) as u32;
        let (path_end, query) = match bytes[..end as usize].iter().position(|b| *b == b'?') {
            Some(q) => (
                path_from + q as u32,
                Some(Span {
                    start: path_from + q as u32 + 1,
                    end: path_from + end,
                }),
            ),
            None => (path_from + end, None),
        };
        self.query = query;
        self.path = (path_end > path_from).then_some(Span {
            start: path_from,
            end: path_end,
        });
        if self.path.is_some_and(|p| p.get(&self.raw)[0] != b'/') {
            // `http://host?x`: the path is empty, the query is not.
            return Err(HeadError::Target);
        }
        Ok(())
    }

    /// The framing and authority rules, and whether the connection stays
    /// open.
    fn check_fields(&mut self) -> Result<(), HeadError> {
        let mut host = None;
        let mut keys = 0;
        let mut length = None;
        let mut codings: Option<Codings> = None;
        let mut close = false;
        let mut keep_alive = false;
        for field in &self.fields {
            let name = field.name.get(&self.raw);
            let value = field.value.get(&self.raw);
            if name.eq_ignore_ascii_case(b"host") {
                if host.is_some() || value.contains(&b'@') {
                    return Err(HeadError::Host);
                }
                host = Some(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value).ok_or(HeadError::ContentLength)?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(HeadError::ContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"authorization") {
                keys += 1;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Several fields make one list: the last coding frames.
                codings.get_or_insert_default().add(value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in connection_tokens(value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        if keys > 1 {
            return Err(HeadError::TwoKeys);
        }
        if host.is_none() && self.version == Version::HTTP_11 {
            return Err(HeadError::NoHost);
        }
        if let (Some(host), Some(authority)) = (host, self.authority)
            && host != authority.get(&self.raw)
        {
            return Err(HeadError::Host);
        }
        self.keep_alive = match self.version {
            Version::HTTP_10 => keep_alive && !close,
            _ => !close,
        };
        self.chunked = false;
        self.content_length = length;
        match codings {
            None => {}
            Some(_) if self.version == Version::HTTP_10 => return Err(HeadError::TransferEncoding),
            // RFC 9112 6.1 lets a server read chunked and close after; a
            // client that sends both may be smuggling, so it gets neither.
            Some(_) if length.is_some() => return Err(HeadError::TwoFramings),
            Some(c) if !c.last_chunked || c.chunked > 1 => {
                return Err(HeadError::TransferEncoding);
            }
            Some(c) if c.others > 0 => return Err(HeadError::CodingNotImplemented),
            Some(_) => self.chunked = true,
        }
        Ok(())
    }

    /// The head of an HTTP/2 request (which Pingora's h2 session read), in
    /// this form: its pseudo-headers and fields copied into one buffer.
    pub fn from_h2(req: &pingora_http::RequestHeader) -> Self {
        let mut raw = BytesMut::with_capacity(512);
        let mut put = |bytes: &[u8]| {
            let start = raw.len() as u32;
            raw.extend_from_slice(bytes);
            Span {
                start,
                end: raw.len() as u32,
            }
        };
        let path = put(req.uri.path().as_bytes());
        let query = req.uri.query().map(|q| put(q.as_bytes()));
        let authority = req.uri.authority().map(|a| put(a.as_str().as_bytes()));
        let fields = req
            .headers
            .iter()
            .map(|(name, value)| Field {
                name: put(name.as_str().as_bytes()),
                value: put(value.as_bytes()),
            })
            .collect();
        let content_length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| content_length(v.as_bytes()));
        Self {
            raw: raw.freeze(),
            method: req.method.clone(),
            version: req.version,
            path: Some(path),
            query,
            authority,
            fields,
            content_length,
            chunked: false,
            keep_alive: true,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The path, without query.
    pub fn path(&self) -> &str {
        self.path.map_or("/", |p| utf8(p.get(&self.raw)))
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| utf8(q.get(&self.raw)))
    }

    /// The host the client named: the target's authority, else `Host`.
    pub fn host(&self) -> Option<&str> {
        match self.authority {
            Some(authority) => std::str::from_utf8(authority.get(&self.raw)).ok(),
            None => self
                .field(b"host")
                .and_then(|h| std::str::from_utf8(h).ok()),
        }
    }

    /// The target's authority (absolute-form, or HTTP/2's `:authority`).
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.map(|a| a.get(&self.raw))
    }

    /// The first field named `name` (any case).
    pub fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.get(&self.raw).eq_ignore_ascii_case(name))
            .map(|f| f.value.get(&self.raw))
    }

    /// Every field, as sent.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (f.name.get(&self.raw), f.value.get(&self.raw)))
    }

    /// The declared body length, unless the body is chunked.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the body is chunked.
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// Whether the request declares a body (by length or chunked).
    pub fn declares_body(&self) -> bool {
        self.chunked || self.content_length.is_some()
    }

    /// How the body is framed on an HTTP/1.x connection.
    pub fn body(&self) -> BodyDecoder {
        if self.chunked {
            BodyDecoder::chunked()
        } else {
            BodyDecoder::length(self.content_length.unwrap_or(0))
        }
    }

    /// Whether the client keeps the connection open after this request.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client waits for `100 Continue` before its body.
    pub fn expects_continue(&self) -> bool {
        self.field(b"expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    }

    /// The head's size in bytes, as received.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the head is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// Why a head that is still incomplete is already too large: its request
/// line alone may be the part over its limit.
fn partial_too_large(buf: &[u8], limits: HeadLimits) -> HeadError {
    let line = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    if line > limits.max_uri_bytes {
        HeadError::UriTooLong
    } else {
        HeadError::TooLarge
    }
}

/// The head's path and query are visible ASCII (httparse checks them);
/// bytes from an HTTP/2 request come from `str`s.
fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

#[cfg(test)]
mod tests;
