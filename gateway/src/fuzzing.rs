//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! in `tests/fuzz_corpus.rs`: one function per target, taking the raw
//! input bytes. Not an API: it exists so that the fuzzer and the stable
//! test suite call exactly the same code, while the parsers' internals
//! stay private.
//!
//! Each function drives a parser the way the gateway does with untrusted
//! input and turns the parser's documented promises into assertions, so a
//! broken promise is a crash the fuzzer reports, not a silent wrong answer.
//! Inputs that a parser refuses are fine; a panic or a hang is a bug.

#![doc(hidden)]

use std::hint::black_box;
use std::path::Path;
use std::sync::LazyLock;

use bytes::BytesMut;
use config::edit::{
    AutoscalingPatch, AutoscalingScope, ConfigDocument, DeploymentPatch, EditError,
    EnvironmentPatch, NewDeployment, NewEnvironment,
};
use config::{DeploymentKind, PRODUCTION};

use crate::http1::{BodyError, Decoded, HeadError, HeadLimits, RequestHead};
use crate::route::{self, Call, Route, RouteParseError};

/// `config_toml`: a config file as `gateway check` and hot reload read it:
/// `config::load_file_checked` without the disk read, i.e. `load_str`
/// (parse and validate), `check_files` (the files local deployments name,
/// looked up under a directory that does not exist, so every one is a
/// located error) and `resolve_paths`, with the error report rendered as
/// `gateway check` prints it. A replica's own settings file (`engine
/// --config`) goes through the same TOML layer, so it is read too.
pub fn config_toml(data: &[u8]) {
    // `load_file` reads with `read_to_string`: text that is not UTF-8 never
    // reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/gateway");
    match config::load_str(text, "fuzz.toml") {
        Ok(mut config) => {
            if let Err(errors) = config::check_files(&config, base, text, "fuzz.toml") {
                drop(black_box(errors.to_string()));
            }
            config.resolve_paths(base);
            // The management API edits the served file as a comment-keeping
            // document (a second TOML parser): a file the gateway serves
            // must be one the API can edit.
            if let Err(e) = ConfigDocument::parse(text, "fuzz.toml") {
                panic!("load_str accepted a config that ConfigDocument::parse refuses:\n{e}");
            }
        }
        // Locating every error (line, column, path) is part of the check.
        Err(errors) => drop(black_box(errors.to_string())),
    }
    match config::load_engine_str(text, "engine.toml") {
        Ok(mut settings) => settings.resolve_paths(base),
        Err(errors) => drop(black_box(errors.to_string())),
    }
}

/// `predict_url`: the client-facing wire parsers. The bytes are one client
/// connection's stream: request heads (`RequestHead::parse`, default
/// limits), each followed by its body (`BodyDecoder`), pipelined, read
/// first all at once and then in small pieces, as TCP may deliver them.
/// Both readings must agree: a request's meaning may not depend on how it
/// was split into segments. Each head is routed (`route::parse`) and its
/// key hashed, as `Gateway::admit` does. The bytes are also given to
/// `route::parse` directly, as `host\npath`, since an HTTP/2 request's
/// host and path reach it from Pingora's parser, not ours.
pub fn predict_url(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let (host, path) = text.split_once('\n').unwrap_or(("", text));
        check_route(route::parse(Some(host), path));
        check_route(route::parse(None, text));
    }
    let whole = read_connection(data, data.len().max(1));
    // The last byte picks the read size (1 to 256 bytes), so the fuzzer
    // explores segmentations without a separate input format. At most 64
    // pieces, though: a head is parsed again from its start after every
    // read (httparse keeps no state), so tiny reads of a long input cost
    // quadratic time, which would only slow the fuzzer down.
    let step = data
        .last()
        .map_or(1, |b| usize::from(*b) + 1)
        .max(data.len().div_ceil(64));
    let pieces = read_connection(data, step);
    assert_eq!(
        whole, pieces,
        "the same bytes read in pieces of {step} gave other requests"
    );
}

/// What one request on a connection amounted to.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A head refused: the connection ends.
    BadHead(HeadError),
    /// A head taken, with its route, its body as decoded and how the body
    /// ended (`None`: the stream ended first).
    Taken {
        route: Result<String, RouteParseError>,
        body: Vec<u8>,
        end: Option<Result<(), BodyError>>,
    },
}

/// Reads `wire` as one connection whose reads return `step` bytes at a
/// time, the way `http1::ServerConn` does: parse a head whenever bytes are
/// buffered, then decode its body out of the same buffer, until the stream
/// ends, a head or body is refused, or a request ends keep-alive.
fn read_connection(wire: &[u8], step: usize) -> Vec<Request> {
    let mut chunks = wire.chunks(step);
    let mut buf = BytesMut::new();
    // One head, refilled for each request, as a connection keeps it.
    let mut head = RequestHead::default();
    let mut requests = Vec::new();
    loop {
        match head.parse(&mut buf, HeadLimits::default()) {
            Ok(true) => {}
            Ok(false) => match chunks.next() {
                Some(chunk) => {
                    buf.extend_from_slice(chunk);
                    continue;
                }
                None => return requests,
            },
            Err(e) => {
                requests.push(Request::BadHead(e));
                return requests;
            }
        }
        check_head(&head);
        let route = route::parse(head.host(), head.path()).map(|r| {
            check_route(Ok(r));
            format!("{r:?}")
        });
        let _ = black_box(routing::header_digest(head.field(b"authorization")));
        let mut decoder = head.body();
        let mut body = Vec::new();
        let end = loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Piece(piece)) => {
                    assert!(!piece.is_empty(), "a body piece is never empty");
                    body.extend_from_slice(&piece);
                }
                Ok(Decoded::Done) => break Some(Ok(())),
                Ok(Decoded::NeedMore) => match chunks.next() {
                    Some(chunk) => buf.extend_from_slice(chunk),
                    None => break None,
                },
                Err(e) => break Some(Err(e)),
            }
        };
        if let Some(length) = head.content_length()
            && !head.is_chunked()
        {
            assert!(body.len() as u64 <= length, "a body past its length");
        }
        let more = end == Some(Ok(())) && head.keep_alive();
        requests.push(Request::Taken { route, body, end });
        if !more {
            return requests;
        }
    }
}

/// The framing promises of a parsed head (RFC 9112; `http1::request`).
fn check_head(head: &RequestHead) {
    assert!(!head.is_empty(), "a parsed head has bytes");
    assert!(head.len() <= HeadLimits::default().max_head_bytes);
    assert!(head.path().starts_with('/'), "path {:?}", head.path());
    // Chunked overrides nothing: both framings at once are refused.
    assert!(!(head.is_chunked() && head.content_length().is_some()));
    if head.version() == http::Version::HTTP_10 {
        assert!(!head.is_chunked(), "chunked is refused on HTTP/1.0");
    }
    black_box((head.query(), head.host(), head.expects_continue()));
    for (name, _) in head.fields() {
        assert!(!name.is_empty(), "a field has a name");
    }
}

/// What a parsed route promises: a model, non-empty names, and a replica
/// path for passthrough calls.
fn check_route(route: Result<Route<'_>, RouteParseError>) {
    let Ok(route) = route else { return };
    assert!(!route.model_id.is_empty());
    match route.target {
        routing::Target::Environment(name) | routing::Target::Deployment(name) => {
            assert!(!name.is_empty());
        }
        routing::Target::Production | routing::Target::Development => {}
    }
    if let Call::Sync(path) = route.call {
        assert!(path.starts_with('/'), "replica path {path:?}");
    }
}

/// The document the management API edits in `api_json`: the reference
/// config, which has every kind of deployment and environment.
static API_BASE: LazyLock<ConfigDocument> = LazyLock::new(|| {
    ConfigDocument::parse(
        include_str!("../../examples/gateway.toml"),
        "examples/gateway.toml",
    )
    .expect("examples/gateway.toml is valid (the config tests load it)")
});

/// The body of a promote: `{"deployment_id": "..."}` on an environment,
/// `{"environment": "..."}` (optional; an empty body means production) on
/// a deployment. `control::api` declares these inline, with
/// `deny_unknown_fields`; the gateway has no serde derive, so they are
/// read here from a JSON object: `key` a string, and nothing else in it.
fn promote_body(data: &[u8], key: &str) -> Option<Option<String>> {
    let object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data).ok()?;
    if object.keys().any(|k| k != key) {
        return None;
    }
    match object.get(key) {
        None | Some(serde_json::Value::Null) => Some(None),
        Some(serde_json::Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// `api_json`: the management API's request bodies. The bytes are read as
/// each body type the API takes (`serde_json::from_slice`, as
/// `control::api` does); each one that parses is applied, as its endpoint
/// applies it, to an in-memory copy of the reference config, where the
/// edit runs its lifecycle checks and validates the edited file. What
/// needs a running gateway (the file store, starting a promotion's
/// rollout) is left out.
///
/// The edit module's promises are checked: an edit that succeeds leaves a
/// file that loads again, and one that fails leaves the document as it
/// was.
pub fn api_json(data: &[u8]) {
    let base = &*API_BASE;
    let model = base.config().models[0].id.clone();
    // A named environment besides production, to patch (`staging` in the
    // reference config).
    let env = base.config().models[0]
        .environments
        .iter()
        .map(|e| e.name.clone())
        .find(|name| name != PRODUCTION)
        .unwrap_or_else(|| PRODUCTION.to_owned());

    if let Ok(new) = serde_json::from_slice::<NewDeployment>(data) {
        edit(|doc| doc.add_deployment(&model, new));
    }
    if let Ok(patch) = serde_json::from_slice::<DeploymentPatch>(data) {
        edit(|doc| doc.update_deployment(&model, PRODUCTION, patch));
    }
    if let Ok(patch) = serde_json::from_slice::<AutoscalingPatch>(data) {
        edit(|doc| {
            let id = doc.resolve_deployment(&model, PRODUCTION)?;
            doc.set_autoscaling(&model, AutoscalingScope::Deployment(id), patch)
        });
        edit(|doc| doc.set_autoscaling(&model, AutoscalingScope::Environment(env.clone()), patch));
    }
    if let Ok(new) = serde_json::from_slice::<NewEnvironment>(data) {
        edit(|doc| doc.add_environment(&model, new));
    }
    if let Ok(patch) = serde_json::from_slice::<EnvironmentPatch>(data) {
        edit(|doc| doc.update_environment(&model, &env, patch));
    }
    // `deployment_id` is required.
    if let Some(Some(deployment)) = promote_body(data, "deployment_id") {
        edit(|doc| promote(doc, &model, PRODUCTION, &deployment));
    }
    // An empty body is the default (production), as in the API.
    let environment = if data.is_empty() {
        Some(None)
    } else {
        promote_body(data, "environment")
    };
    if let Some(environment) = environment {
        let target = environment.as_deref().unwrap_or(PRODUCTION);
        edit(|doc| promote(doc, &model, target, "development"));
    }
}

/// Applies `change` to a copy of the reference document and checks the
/// edit module's promises.
fn edit<T>(change: impl FnOnce(&mut ConfigDocument) -> Result<T, EditError>) {
    let mut doc = API_BASE.clone();
    match change(&mut doc) {
        Ok(_) => {
            let text = doc.text();
            if let Err(e) = ConfigDocument::parse(&text, doc.origin()) {
                panic!("an edit produced a file that does not load:\n{e}\n---\n{text}");
            }
            // The store then looks for the files the edit names.
            if let Err(errors) = doc.check_files(Path::new("/nonexistent/gateway")) {
                drop(black_box(errors.to_string()));
            }
        }
        Err(e) => {
            // The API answers with the message.
            drop(black_box(e.to_string()));
            assert!(
                doc.text() == API_BASE.text(),
                "a refused edit changed the document"
            );
        }
    }
}

/// The config edit of `control::api`'s promote: the target must exist and
/// be active; a development deployment is first copied into a new one.
fn promote(
    doc: &mut ConfigDocument,
    model: &str,
    env: &str,
    reference: &str,
) -> Result<String, EditError> {
    let m = doc
        .config()
        .model(model)
        .ok_or_else(|| EditError::NotFound(format!("model `{model}`")))?;
    if m.environment(env).is_none() {
        return Err(EditError::NotFound(format!("environment `{env}`")));
    }
    let id = doc.resolve_deployment(model, reference)?;
    let found = doc
        .config()
        .model(model)
        .and_then(|m| m.deployment(&id))
        .map(|d| (d.active, d.kind));
    match found {
        Some((false, _)) => Err(EditError::Conflict(format!("`{id}` is inactive"))),
        Some((true, DeploymentKind::Development)) => doc.promote_development(model),
        Some((true, _)) => Ok(id),
        None => Err(EditError::NotFound(format!("deployment `{reference}`"))),
    }
}
