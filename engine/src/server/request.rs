//! A predict request's body: `{"text": "..."}` or `{"inputs": ["...", ...]}`,
//! with an optional `"stream": true`.
//!
//! Parsing refuses a request with more than `max_inputs` inputs without
//! building them: past the cap, elements are only skipped and counted, so a
//! body of 10,000 empty strings costs a scan of its bytes, not 10,000
//! strings, and is refused before it waits for a slot, is tokenized or
//! reaches the model.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A predict request, within its input cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictRequest {
    /// The texts to run, in order.
    pub texts: Vec<String>,
    /// `"stream": true`: one server-sent event per input.
    pub stream: bool,
}

/// Why a predict body was refused (all 400).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not one of the two request shapes.
    #[error("expected {{\"text\": \"...\"}} or {{\"inputs\": [\"...\", ...]}}")]
    Shape,
    /// More inputs than the replica takes in one request.
    #[error("too many inputs: {count} > {max}; send at most {max} per request")]
    TooManyInputs {
        /// Inputs in the request.
        count: usize,
        /// `max_inputs`.
        max: usize,
    },
}

impl From<serde_json::Error> for RequestError {
    fn from(e: serde_json::Error) -> Self {
        // Syntax and truncation are "not JSON"; a type mismatch is JSON of
        // the wrong shape.
        if e.is_data() {
            Self::Shape
        } else {
            Self::Json(e)
        }
    }
}

impl PredictRequest {
    /// Parses `body`, refusing more than `max_inputs` inputs.
    pub fn parse(body: &[u8], max_inputs: usize) -> Result<Self, RequestError> {
        // Top-level fields stay raw text borrowed from the body: only the
        // ones used are decoded, and nothing else is built.
        let fields: HashMap<String, &RawValue> = serde_json::from_slice(body)?;
        let texts = match (fields.get("text"), fields.get("inputs")) {
            (Some(text), _) => vec![serde_json::from_str::<String>(text.get())?],
            (None, Some(inputs)) => bounded_texts(inputs, max_inputs)?,
            (None, None) => return Err(RequestError::Shape),
        };
        // As before: anything but `true` (absent, false, not a bool) is
        // an ordinary request.
        let stream = fields
            .get("stream")
            .and_then(|s| serde_json::from_str::<bool>(s.get()).ok())
            .unwrap_or(false);
        Ok(Self { texts, stream })
    }
}

/// The strings of the `inputs` array, or how many there were if more
/// than `max`.
fn bounded_texts(inputs: &RawValue, max: usize) -> Result<Vec<String>, RequestError> {
    let mut de = serde_json::Deserializer::from_str(inputs.get());
    match (BoundedTexts { max }).deserialize(&mut de)? {
        Counted::Within(texts) => Ok(texts),
        Counted::Over(count) => Err(RequestError::TooManyInputs { count, max }),
    }
}

enum Counted {
    Within(Vec<String>),
    Over(usize),
}

/// Decodes up to `max` strings, then only counts the rest.
struct BoundedTexts {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for BoundedTexts {
    type Value = Counted;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Counted, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedTexts {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        // The size hint is the client's word: cap the allocation by `max`.
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while texts.len() < self.max {
            match seq.next_element::<String>()? {
                Some(text) => texts.push(text),
                None => return Ok(Counted::Within(texts)),
            }
        }
        let mut count = texts.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(if count > self.max {
            Counted::Over(count)
        } else {
            Counted::Within(texts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, max: usize) -> Result<PredictRequest, RequestError> {
        PredictRequest::parse(body.as_bytes(), max)
    }

    #[test]
    fn both_shapes_and_the_stream_flag() {
        assert_eq!(
            parse(r#"{"text": "a", "stream": true}"#, 4).unwrap(),
            PredictRequest {
                texts: vec!["a".into()],
                stream: true
            }
        );
        let inputs = parse(
            r#"{"inputs": ["a", "b\u00e9"], "stream": "yes", "x": [1]}"#,
            2,
        );
        assert_eq!(
            inputs.unwrap(),
            PredictRequest {
                texts: vec!["a".into(), "bé".into()],
                stream: false
            }
        );
        assert_eq!(parse(r#"{"inputs": []}"#, 2).unwrap().texts.len(), 0);
    }

    #[test]
    fn wrong_shapes_and_broken_json_are_told_apart() {
        for body in [
            r#"{"wrong": 1}"#,
            r#"{"inputs": [1, 2]}"#,
            r#"{"text": 42}"#,
            r#"{"inputs": "a"}"#,
            r#"["a"]"#,
            "3",
        ] {
            assert!(matches!(parse(body, 8), Err(RequestError::Shape)), "{body}");
        }
        for body in ["not json", r#"{"inputs": ["a""#, ""] {
            assert!(
                matches!(parse(body, 8), Err(RequestError::Json(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn more_inputs_than_the_cap_are_counted_not_built() {
        let body = format!(r#"{{"inputs": [{}"last"]}}"#, r#""", "#.repeat(10_000));
        let err = parse(&body, 256).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many inputs: 10001 > 256; send at most 256 per request"
        );
        // Past the cap, elements are skipped whatever their type.
        let mixed = parse(r#"{"inputs": ["a", "b", 3, {"c": []}]}"#, 2).unwrap_err();
        assert!(matches!(
            mixed,
            RequestError::TooManyInputs { count: 4, max: 2 }
        ));
        // Exactly at the cap is fine.
        assert_eq!(
            parse(r#"{"inputs": ["a", "b"]}"#, 2).unwrap().texts.len(),
            2
        );
    }
}
