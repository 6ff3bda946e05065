//! The OpenAI-compatible API: `POST /v1/embeddings` and `GET /v1/models`,
//! so that OpenAI's own clients (pointed at the replica, or at the
//! gateway's `.../sync/v1`) work unchanged. Errors come in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! `input` is a string, an array of strings, an array of token ids (one
//! input) or an array of arrays of token ids, in the model's own
//! vocabulary and without special tokens. `encoding_format` `"base64"`
//! sends each vector as the base64 of its little-endian f32 bytes (the
//! official Python client asks for it by default). `dimensions` may only
//! name the model's own width: its vectors cannot be shortened.
//! `model` must be a string; the replica serves one model whatever it
//! names, and answers with that model's name.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::value::RawValue;

use super::request::{InputList, RequestError};
use super::{Body, Refusal, Replica, bytes_response, mark_busy, read_body};
use crate::backend::{ModelKind, Output};
use crate::telemetry;

pub(super) async fn handle(replica: &Replica, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/embeddings") => {
            let response = embeddings(replica, req)
                .await
                .unwrap_or_else(|e| e.response());
            telemetry::request(response.status().as_u16());
            response
        }
        (&Method::GET, "/v1/models") => json(&ModelList {
            object: "list",
            data: [model(replica)],
        }),
        (&Method::GET, path)
            if path.strip_prefix("/v1/models/") == Some(&replica.settings.model_name) =>
        {
            json(&model(replica))
        }
        (&Method::GET, path) if path.starts_with("/v1/models/") => ApiError::not_found(format!(
            "The model `{}` does not exist; this replica serves `{}`",
            &path["/v1/models/".len()..],
            replica.settings.model_name
        ))
        .response(),
        (_, "/v1/embeddings" | "/v1/models") => ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{} is not allowed here", req.method()),
            param: None,
            busy: false,
        }
        .response(),
        (_, path) => ApiError::not_found(format!("no route {path}")).response(),
    }
}

async fn embeddings(replica: &Replica, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let loaded = replica.loaded()?;
    replica.room()?;
    let body = read_body(req, replica.settings.max_body_bytes).await?;
    let request = EmbeddingsRequest::parse(&body, replica.settings.max_inputs)?;
    drop(body);
    let ModelKind::Embedding { width } = loaded.backend.kind() else {
        return Err(ApiError::bad(
            "this replica's model does not produce embeddings",
            None,
        ));
    };
    if let Some(asked) = request.dimensions
        && asked != width
    {
        return Err(ApiError::bad(
            format!(
                "this model's embeddings have {width} dimensions and cannot be shortened; leave `dimensions` out or set it to {width}"
            ),
            Some("dimensions"),
        ));
    }
    let outputs = replica.run(loaded, request.input.into_inputs()).await?;
    let mut data = Vec::with_capacity(outputs.len());
    let mut tokens = 0;
    for (index, output) in outputs.iter().enumerate() {
        let Output::Embedding(e) = output else {
            return Err(ApiError::from(Refusal::Failed(
                "the model returned something other than an embedding".into(),
            )));
        };
        tokens += e.tokens;
        let embedding = match request.encoding {
            Encoding::Float => Vector::Float(&e.embedding),
            Encoding::Base64 => Vector::Base64(base64_le(&e.embedding)),
        };
        data.push(EmbeddingObject {
            object: "embedding",
            index,
            embedding,
        });
    }
    Ok(json(&EmbeddingsResponse {
        object: "list",
        data,
        model: &replica.settings.model_name,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// The base64 of `values` as little-endian f32s: what OpenAI's clients
/// decode (`numpy.frombuffer(base64.b64decode(s), dtype="float32")`).
fn base64_le(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`'s body.
#[derive(Debug)]
struct EmbeddingsRequest {
    input: InputList,
    encoding: Encoding,
    dimensions: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

impl EmbeddingsRequest {
    fn parse(body: &[u8], max_inputs: usize) -> Result<Self, ApiError> {
        let fields: HashMap<String, &RawValue> = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("the body is not a JSON object: {e}"), None))?;
        let field = |name: &'static str| fields.get(name).map(|v| v.get());
        match field("model").map(serde_json::from_str::<String>) {
            Some(Ok(_)) => {}
            Some(Err(_)) => return Err(ApiError::bad("`model` must be a string", Some("model"))),
            None => {
                return Err(ApiError::bad(
                    "you must provide a model parameter",
                    Some("model"),
                ));
            }
        }
        let Some(input) = fields.get("input") else {
            return Err(ApiError::bad(
                "you must provide an input parameter",
                Some("input"),
            ));
        };
        let input = if input.get().trim_start().starts_with('"') {
            let text: String = serde_json::from_str(input.get())
                .map_err(|e| ApiError::bad(format!("`input`: {e}"), Some("input")))?;
            InputList::Texts(vec![text])
        } else {
            InputList::parse(input, max_inputs).map_err(|e| match e {
                RequestError::TooManyInputs { .. } => {
                    telemetry::rejected_too_many_inputs();
                    ApiError::bad(e.to_string(), Some("input"))
                }
                _ => ApiError::bad(
                    "`input` must be a string, an array of strings, an array of token ids or an array of arrays of token ids",
                    Some("input"),
                ),
            })?
        };
        let empty = match &input {
            InputList::Texts(t) => t.is_empty() || t.iter().any(String::is_empty),
            InputList::Tokens(ids) => ids.is_empty(),
            InputList::TokenLists(l) => l.is_empty() || l.iter().any(Vec::is_empty),
        };
        if empty {
            return Err(ApiError::bad(
                "`input` must not be empty, nor hold an empty input",
                Some("input"),
            ));
        }
        let encoding = match field("encoding_format") {
            None | Some("null" | "\"float\"") => Encoding::Float,
            Some("\"base64\"") => Encoding::Base64,
            Some(other) => {
                return Err(ApiError::bad(
                    format!("`encoding_format` must be \"float\" or \"base64\", not {other}"),
                    Some("encoding_format"),
                ));
            }
        };
        let dimensions = match field("dimensions") {
            None | Some("null") => None,
            Some(d) => match serde_json::from_str::<usize>(d) {
                Ok(d) if d > 0 => Some(d),
                _ => {
                    return Err(ApiError::bad(
                        "`dimensions` must be a positive integer",
                        Some("dimensions"),
                    ));
                }
            },
        };
        Ok(Self {
            input,
            encoding,
            dimensions,
        })
    }
}

#[derive(Serialize)]
struct EmbeddingsResponse<'a> {
    object: &'static str,
    data: Vec<EmbeddingObject<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingObject<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: [ModelObject; 1],
}

#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model(replica: &Replica) -> ModelObject {
    ModelObject {
        id: replica.settings.model_name.clone(),
        object: "model",
        // Seconds since the epoch when the replica became ready.
        created: replica
            .ready_at_unix_us
            .get()
            .map_or(0, |us| us / 1_000_000),
        owned_by: "engine",
    }
}

fn json(value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(StatusCode::OK, Bytes::from(bytes)),
        Err(e) => ApiError::from(Refusal::Failed(e.to_string())).response(),
    }
}

/// An error in OpenAI's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    /// The replica is full (503, `Retry-After`).
    busy: bool,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param,
            busy: false,
        }
    }

    fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message,
            param: None,
            busy: false,
        }
    }

    /// OpenAI's `type` and `code` for the status.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self.status.as_u16() {
            // OpenAI's own "the engine is currently overloaded".
            503 if self.busy => ("server_error", Some("overloaded")),
            404 => ("invalid_request_error", Some("not_found")),
            500.. => ("server_error", None),
            _ => ("invalid_request_error", None),
        }
    }

    fn response(&self) -> Response<Body> {
        let (kind, code) = self.kind();
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": code,
            }
        });
        let mut response = bytes_response(self.status, Bytes::from(body.to_string()));
        if self.busy {
            mark_busy(&mut response);
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        Self {
            status: refusal.status(),
            message: refusal.to_string(),
            param: matches!(refusal, Refusal::BadRequest(_)).then_some("input"),
            busy: matches!(refusal, Refusal::Full(_)),
        }
    }
}
