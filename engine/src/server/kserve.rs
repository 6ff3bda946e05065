//! The Open Inference Protocol (KServe v2, as Triton speaks it over HTTP),
//! so KServe and Triton clients work against a replica:
//!
//! - `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready`
//! - `GET /v2/models/{name}` (metadata), `GET /v2/models/{name}/ready`
//! - `POST /v2/models/{name}/infer`: one `BYTES` input tensor `text` of
//!   shape `[N]` or `[N, 1]` (one text per element). An embedding model's
//!   outputs are `embedding` (`FP32`, `[N, dim]`) and `tokens` (`INT64`,
//!   `[N]`); a classifier's are `labels` (`BYTES`, `[N, L]`, each text's
//!   label names best first), `scores` (`FP32`, `[N, L]`, their
//!   probabilities, in the same order) and `tokens`.
//!
//! Tensors travel as JSON, or in the binary tensor extension: the JSON
//! head is then the first `Inference-Header-Content-Length` bytes of the
//! body, an input with `"parameters": {"binary_data_size": n}` takes its
//! next `n` bytes (`BYTES` elements as a 4-byte little-endian length and
//! the bytes), and outputs asked for with `"binary_data": true` (or all
//! of them, with the request parameter `"binary_data_output": true`) come
//! back the same way, FP32 and INT64 values little-endian. Errors are
//! `{"error": "..."}`.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Body, Refusal, Replica, bytes_response, error_response, json_response, read_body,
    refusal_response,
};
use crate::backend::{Input, ModelKind, Output};
use crate::telemetry;

/// The header naming the length of the JSON head of a binary body.
const HEADER_LENGTH: &str = "inference-header-content-length";
const INPUT: &str = "text";
const EMBEDDING: &str = "embedding";
const LABELS: &str = "labels";
const SCORES: &str = "scores";
const TOKENS: &str = "tokens";

/// The datatype of output `name`, in metadata and in answers.
fn datatype(name: &str) -> &'static str {
    match name {
        EMBEDDING | SCORES => "FP32",
        LABELS => "BYTES",
        _ => "INT64",
    }
}

/// The outputs a model of `kind` has, in the order metadata lists them
/// and infer returns them by default.
fn output_names(kind: ModelKind) -> &'static [&'static str] {
    match kind {
        ModelKind::Embedding { .. } => &[EMBEDDING, TOKENS],
        ModelKind::Classifier { .. } => &[LABELS, SCORES, TOKENS],
        ModelKind::Other => &[],
    }
}

pub(super) async fn handle(replica: &Replica, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let model = path
        .strip_prefix("/v2/models/")
        .map(|rest| rest.split_once('/').unwrap_or((rest, "")));
    match (req.method(), path, model) {
        (&Method::GET, "/v2", _) => json_response(
            StatusCode::OK,
            &json!({ "name": "engine", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }),
        ),
        (&Method::GET, "/v2/health/live", _) => {
            json_response(StatusCode::OK, &json!({ "live": true }))
        }
        (&Method::GET, "/v2/health/ready", _) => ready(replica),
        (_, _, Some((name, _))) if name != replica.settings.model_name => error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown model `{name}`; this replica serves `{}`",
                replica.settings.model_name
            ),
        ),
        (&Method::GET, _, Some((_, ""))) => metadata(replica),
        (&Method::GET, _, Some((_, "ready"))) => ready(replica),
        (&Method::POST, _, Some((_, "infer"))) => {
            let response = infer(replica, req)
                .await
                .unwrap_or_else(|r| refusal_response(&r));
            telemetry::request(response.status().as_u16());
            response
        }
        (_, _, Some((_, "" | "ready" | "infer"))) => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_response(StatusCode::NOT_FOUND, "not found"),
    }
}

fn ready(replica: &Replica) -> Response<Body> {
    let ready = replica.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({ "ready": ready }))
}

fn metadata(replica: &Replica) -> Response<Body> {
    let kind = replica
        .loaded
        .get()
        .map_or(ModelKind::Other, |l| l.backend.kind());
    let (width, labels) = match kind {
        ModelKind::Embedding { width } => (width, 0),
        ModelKind::Classifier { labels } => (0, labels),
        ModelKind::Other => (0, 0),
    };
    let outputs: Vec<Value> = output_names(kind)
        .iter()
        .map(|&name| {
            let shape = match name {
                EMBEDDING => json!([-1, width]),
                LABELS | SCORES => json!([-1, labels]),
                _ => json!([-1]),
            };
            json!({ "name": name, "datatype": datatype(name), "shape": shape })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "name": replica.settings.model_name,
            "versions": ["1"],
            "platform": replica.loaded.get().map_or("", |l| l.backend.name()),
            "inputs": [{ "name": INPUT, "datatype": "BYTES", "shape": [-1] }],
            "outputs": outputs,
        }),
    )
}

/// An inference request's JSON head.
#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<TensorIn>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct TensorIn {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<TensorOut>,
}

#[derive(Serialize)]
struct TensorOut {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::BadRequest(message.into())
}

async fn infer(replica: &Replica, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let loaded = replica.loaded()?;
    replica.room()?;
    let names = output_names(loaded.backend.kind());
    if names.is_empty() {
        return Err(bad(format!(
            "model `{}` produces neither embeddings nor labels, the outputs this API serves; use POST /predict",
            replica.settings.model_name
        )));
    }
    let head_length = match req.headers().get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| bad(format!("{HEADER_LENGTH} must be a byte count")))?,
        ),
    };
    let body = read_body(req, replica.settings.max_body_bytes).await?;
    let (head, mut binary) = match head_length {
        Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
        Some(n) => {
            return Err(bad(format!(
                "{HEADER_LENGTH} is {n} but the body has {} bytes",
                body.len()
            )));
        }
        None => (body.clone(), Bytes::new()),
    };
    let request: InferRequest = serde_json::from_slice(&head)
        .map_err(|e| bad(format!("invalid inference request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(bad(format!(
            "expected one input tensor, `{INPUT}`; got {}",
            request.inputs.len()
        )));
    };
    let texts = texts(input, &mut binary, replica.settings.max_inputs)?;
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the inputs",
            binary.len()
        )));
    }
    let wanted = wanted_outputs(&request, names)?;
    let outputs = replica
        .run(loaded, texts.into_iter().map(Input::Text).collect())
        .await?;
    let mut tail = BytesMut::new();
    let tensors = wanted
        .into_iter()
        .map(|(name, binary)| tensor(name, &outputs, binary, &mut tail))
        .collect::<Result<Vec<_>, _>>()?;
    let response = InferResponse {
        model_name: &replica.settings.model_name,
        model_version: "1",
        id: request.id,
        outputs: tensors,
    };
    let head = serde_json::to_vec(&response).map_err(|e| Refusal::Failed(e.to_string()))?;
    if tail.is_empty() {
        return Ok(bytes_response(StatusCode::OK, Bytes::from(head)));
    }
    let head_length = head.len();
    let mut body = BytesMut::from(&head[..]);
    body.extend_from_slice(&tail);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(HEADER_LENGTH, HeaderValue::from(head_length))
        .body(Full::new(body.freeze()).boxed())
        .expect("static response parts are valid"))
}

/// The output tensor `name` of `outputs` (one per text), in JSON or
/// appended to `tail`.
fn tensor(
    name: &'static str,
    outputs: &[Output],
    binary: bool,
    tail: &mut BytesMut,
) -> Result<TensorOut, Refusal> {
    let count = outputs.len();
    // The model is asked what it is before it runs; a reload in between
    // can change the answer.
    let changed = || Refusal::Failed("the model changed while the request ran".into());
    let embeddings = || {
        outputs
            .iter()
            .map(|o| match o {
                Output::Embedding(e) => Ok(e.embedding.as_slice()),
                _ => Err(changed()),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let classifications = || {
        outputs
            .iter()
            .map(|o| match o {
                Output::Classification(c) => Ok(c.labels.as_slice()),
                _ => Err(changed()),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match name {
        EMBEDDING => {
            let rows = embeddings()?;
            let shape = vec![count, row_width(&rows)];
            let values = rows.iter().flat_map(|r| r.iter().copied());
            out_tensor(name, shape, binary, tail, values, |b, v| {
                b.put_f32_le(v);
            })
        }
        LABELS => {
            let rows = classifications()?;
            let shape = vec![count, row_width(&rows)];
            let values = rows.iter().flat_map(|r| r.iter().map(|l| l.label.as_str()));
            // A BYTES element in binary: its length (u32, little-endian),
            // then its bytes.
            out_tensor(name, shape, binary, tail, values, |b, v| {
                b.put_u32_le(u32::try_from(v.len()).unwrap_or(u32::MAX));
                b.put_slice(v.as_bytes());
            })
        }
        SCORES => {
            let rows = classifications()?;
            let shape = vec![count, row_width(&rows)];
            let values = rows.iter().flat_map(|r| r.iter().map(|l| l.score));
            out_tensor(name, shape, binary, tail, values, |b, v| {
                b.put_f32_le(v);
            })
        }
        _ => {
            let tokens = outputs
                .iter()
                .map(|o| match o {
                    Output::Embedding(e) => Ok(e.tokens as i64),
                    Output::Classification(c) => Ok(c.tokens as i64),
                    Output::Synthetic { .. } => Err(changed()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            out_tensor(
                name,
                vec![count],
                binary,
                tail,
                tokens.into_iter(),
                |b, v| {
                    b.put_i64_le(v);
                },
            )
        }
    })
}

/// Values per row (0 when there are no rows).
fn row_width<T>(rows: &[&[T]]) -> usize {
    rows.first().map_or(0, |r| r.len())
}

/// One output tensor: its values in the JSON `data`, or appended to `tail`
/// when `binary`.
fn out_tensor<T: Serialize + Copy>(
    name: &'static str,
    shape: Vec<usize>,
    binary: bool,
    tail: &mut BytesMut,
    values: impl Iterator<Item = T>,
    put: impl Fn(&mut BytesMut, T),
) -> TensorOut {
    if binary {
        let start = tail.len();
        for v in values {
            put(tail, v);
        }
        TensorOut {
            name,
            datatype: datatype(name),
            shape,
            data: None,
            parameters: Some(json!({ "binary_data_size": tail.len() - start })),
        }
    } else {
        let data: Vec<T> = values.collect();
        TensorOut {
            name,
            datatype: datatype(name),
            shape,
            data: Some(serde_json::to_value(data).unwrap_or(Value::Null)),
            parameters: None,
        }
    }
}

/// The outputs asked for, of the model's `names` (all when none are
/// named), each with whether it goes in binary.
fn wanted_outputs(
    request: &InferRequest,
    names: &'static [&'static str],
) -> Result<Vec<(&'static str, bool)>, Refusal> {
    let all_binary = flag(&request.parameters, "binary_data_output");
    let Some(asked) = &request.outputs else {
        return Ok(names.iter().map(|&n| (n, all_binary)).collect());
    };
    asked
        .iter()
        .map(|o| {
            let Some(&name) = names.iter().find(|&&n| n == o.name) else {
                return Err(bad(format!(
                    "unknown output `{}`; this model has {}",
                    o.name,
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            Ok((name, all_binary || flag(&o.parameters, "binary_data")))
        })
        .collect()
}

fn flag(parameters: &Map<String, Value>, name: &str) -> bool {
    parameters
        .get(name)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The texts of the `text` input, from its JSON `data` (flat or nested)
/// or from the binary data that follows the head.
fn texts(input: &TensorIn, binary: &mut Bytes, max_inputs: usize) -> Result<Vec<String>, Refusal> {
    if input.name != INPUT {
        return Err(bad(format!(
            "unknown input `{}`; this model takes `{INPUT}`",
            input.name
        )));
    }
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input `{INPUT}` is BYTES, not {}",
            input.datatype
        )));
    }
    let count = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => *n as usize,
        other => {
            return Err(bad(format!(
                "input `{INPUT}` has shape [N] or [N, 1], not {other:?}"
            )));
        }
    };
    if count > max_inputs {
        telemetry::rejected_too_many_inputs();
        return Err(bad(format!(
            "too many inputs: {count} > {max_inputs}; send at most {max_inputs} per request"
        )));
    }
    let texts = match (&input.data, input.parameters.get("binary_data_size")) {
        (Some(data), None) => {
            let mut texts = Vec::with_capacity(count);
            flatten(data, &mut texts, count)?;
            texts
        }
        (None, Some(size)) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .filter(|&s| s <= binary.len())
                .ok_or_else(|| bad("`binary_data_size` is more than the binary data"))?;
            binary_texts(binary.split_to(size), count)?
        }
        _ => {
            return Err(bad(format!(
                "input `{INPUT}` needs `data` or a `binary_data_size` parameter, not both"
            )));
        }
    };
    if texts.len() != count {
        return Err(bad(format!(
            "input `{INPUT}` has {} elements for shape {:?}",
            texts.len(),
            input.shape
        )));
    }
    Ok(texts)
}

/// The strings of `data`, row-major, at most `max` (one more tells the
/// caller the count is wrong).
fn flatten(data: &Value, out: &mut Vec<String>, max: usize) -> Result<(), Refusal> {
    match data {
        Value::String(s) => {
            if out.len() > max {
                return Err(bad(format!(
                    "input `{INPUT}` has more elements than its shape"
                )));
            }
            out.push(s.clone());
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out, max)),
        _ => Err(bad(format!("input `{INPUT}` holds strings only"))),
    }
}

/// `count` BYTES elements, each a 4-byte little-endian length and its
/// bytes, which must be UTF-8 text.
fn binary_texts(mut data: Bytes, count: usize) -> Result<Vec<String>, Refusal> {
    let mut texts = Vec::with_capacity(count);
    while !data.is_empty() {
        if data.len() < 4 || texts.len() == count {
            return Err(bad(format!("input `{INPUT}`: malformed BYTES binary data")));
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if data.len() - 4 < len {
            return Err(bad(format!(
                "input `{INPUT}`: an element runs past the binary data"
            )));
        }
        let _ = data.split_to(4);
        let text = String::from_utf8(data.split_to(len).to_vec())
            .map_err(|_| bad(format!("input `{INPUT}`: an element is not UTF-8 text")))?;
        texts.push(text);
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bytes_elements_are_length_prefixed() {
        let mut data = BytesMut::new();
        for s in ["héllo", "", "world"] {
            data.put_u32_le(s.len() as u32);
            data.put_slice(s.as_bytes());
        }
        let texts = binary_texts(data.clone().freeze(), 3).unwrap();
        assert_eq!(texts, ["héllo", "", "world"]);
        assert!(
            binary_texts(data.clone().freeze(), 2).is_err(),
            "more than the shape"
        );
        let cut = data.freeze().slice(..8);
        assert!(binary_texts(cut, 3).is_err(), "an element past the end");
    }

    #[test]
    fn nested_data_is_flattened_in_order() {
        let mut out = Vec::new();
        flatten(&json!([["a"], ["b"]]), &mut out, 2).unwrap();
        assert_eq!(out, ["a", "b"]);
        assert!(flatten(&json!([1]), &mut Vec::new(), 2).is_err());
    }
}
