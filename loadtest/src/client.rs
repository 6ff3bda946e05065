//! The request every scenario sends, and one exchange over a keep-alive
//! HTTP/1.1 connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// What to send, where.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) authority: String,
    path: String,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// For https:// targets: the TLS client settings and the name the
    /// certificate must carry.
    tls: Option<(Arc<SslConnector>, String)>,
}

impl Target {
    pub(crate) fn new(
        url: &Uri,
        method: Method,
        headers: &[String],
        body: Bytes,
    ) -> anyhow::Result<Self> {
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            bail!("only http:// and https:// URLs are supported");
        }
        let authority = url.authority().context("the URL needs a host")?.to_string();
        let headers = headers
            .iter()
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .with_context(|| format!("header {h:?} is not `Name: value`"))?;
                Ok((name.trim().parse()?, value.trim().parse()?))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            authority,
            path: url.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            method,
            headers,
            body,
            tls: None,
        })
    }

    /// For an https:// `url`: TLS trusting `cacert` (else the system's
    /// roots), offering HTTP/1.1 by ALPN.
    pub(crate) fn with_tls(mut self, url: &Uri, cacert: Option<&Path>) -> anyhow::Result<Self> {
        if url.scheme_str() != Some("https") {
            return Ok(self);
        }
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(path) = cacert {
            builder
                .set_ca_file(path)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        builder.set_alpn_protos(b"\x08http/1.1")?;
        let host = url.host().context("the URL needs a host")?.to_owned();
        self.tls = Some((Arc::new(builder.build()), host));
        Ok(self)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str());
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(self.body.clone()))
            .expect("valid request parts")
    }
}

/// Opens a connection; the error is the kind to count.
pub(crate) async fn connect(target: &Target) -> Result<Sender, &'static str> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|_| "connect")?;
    // Small requests: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let Some((connector, host)) = &target.tls else {
        return handshake(stream).await;
    };
    let ssl = connector
        .configure()
        .and_then(|c| c.into_ssl(host))
        .map_err(|_| "tls")?;
    let mut stream = tokio_openssl::SslStream::new(ssl, stream).map_err(|_| "tls")?;
    std::pin::Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|_| "tls")?;
    handshake(stream).await
}

/// HTTP/1.1 over a connected stream.
async fn handshake<S>(stream: S) -> Result<Sender, &'static str>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The connection in `slot` if it can take a request, else a new one: a
/// server that closed an idle keep-alive connection is not an error.
pub(crate) async fn ready<'a>(
    slot: &'a mut Option<Sender>,
    target: &Target,
) -> Result<&'a mut Sender, &'static str> {
    let usable = match slot.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !usable {
        *slot = None;
        *slot = Some(connect(target).await?);
    }
    Ok(slot.as_mut().expect("set above"))
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// When the response head arrived (time to first byte).
    pub(crate) head_at: Instant,
    pub(crate) body_bytes: u64,
    /// The value of the header being counted, if any (lossy UTF-8).
    pub(crate) counted: Option<String>,
}

/// Sends the request and reads the whole response; the error is the kind
/// to count (the connection is then unusable).
pub(crate) async fn exchange(
    sender: &mut Sender,
    target: &Target,
    count_header: Option<&HeaderName>,
) -> Result<Answer, &'static str> {
    let response = sender
        .send_request(target.request())
        .await
        .map_err(|_| "send")?;
    let head_at = Instant::now();
    let status = response.status().as_u16();
    let counted = count_header.map(|name| {
        response.headers().get(name).map_or_else(
            || "(missing)".to_owned(),
            |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    });
    let mut body = response.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body")?;
        body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok(Answer {
        status,
        head_at,
        body_bytes,
        counted,
    })
}
