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

use crate::backend::Input;

/// A predict request, within its input cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictRequest {
    /// The texts to run, in order ([`Input::Text`]).
    pub inputs: Vec<Input>,
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
        let inputs = match (fields.get("text"), fields.get("inputs")) {
            (Some(text), _) => vec![Input::Text(serde_json::from_str(text.get())?)],
            (None, Some(inputs)) => match InputList::parse(inputs, max_inputs)? {
                InputList::Texts(texts) => texts.into_iter().map(Input::Text).collect(),
                InputList::Tokens(_) | InputList::TokenLists(_) => {
                    return Err(RequestError::Shape);
                }
            },
            (None, None) => return Err(RequestError::Shape),
        };
        // As before: anything but `true` (absent, false, not a bool) is
        // an ordinary request.
        let stream = fields
            .get("stream")
            .and_then(|s| serde_json::from_str::<bool>(s.get()).ok())
            .unwrap_or(false);
        Ok(Self { inputs, stream })
    }
}

/// A JSON array of inputs, in one of the shapes clients send: strings,
/// token ids (one input), or arrays of token ids (one input each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputList {
    /// `["...", ...]`.
    Texts(Vec<String>),
    /// `[1, 2, ...]`: one input's token ids.
    Tokens(Vec<u32>),
    /// `[[1, 2], [3], ...]`.
    TokenLists(Vec<Vec<u32>>),
}

impl InputList {
    /// Parses `array`, refusing more than `max` inputs without building
    /// them: past the cap, elements are only skipped and counted. (Ids of
    /// one token input are not inputs: the body and token caps bound them.)
    pub fn parse(array: &RawValue, max: usize) -> Result<Self, RequestError> {
        let mut de = serde_json::Deserializer::from_str(array.get());
        match (BoundedInputs { max }).deserialize(&mut de)? {
            Counted::Within(list) => Ok(list),
            Counted::Over(count) => Err(RequestError::TooManyInputs { count, max }),
        }
    }

    /// The inputs, ready to run.
    pub fn into_inputs(self) -> Vec<Input> {
        match self {
            Self::Texts(texts) => texts.into_iter().map(Input::Text).collect(),
            Self::Tokens(ids) => vec![Input::Tokens(ids)],
            Self::TokenLists(lists) => lists.into_iter().map(Input::Tokens).collect(),
        }
    }
}

enum Counted {
    Within(InputList),
    Over(usize),
}

/// Decodes up to `max` inputs, then only counts the rest.
struct BoundedInputs {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for BoundedInputs {
    type Value = Counted;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Counted, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedInputs {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings, of token ids, or of arrays of token ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        // The size hint is the client's word: cap the allocation by `max`.
        let capacity = seq.size_hint().unwrap_or(0).min(self.max);
        // The first element decides the shape; the rest must match it.
        let list = match seq.next_element::<Element>()? {
            None => return Ok(Counted::Within(InputList::Texts(Vec::new()))),
            Some(Element::Id(id)) => {
                let mut ids = vec![id];
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                return Ok(Counted::Within(InputList::Tokens(ids)));
            }
            Some(Element::Text(text)) => {
                let mut texts = Vec::with_capacity(capacity);
                texts.push(text);
                while texts.len() < self.max {
                    match seq.next_element::<String>()? {
                        Some(text) => texts.push(text),
                        None => return Ok(Counted::Within(InputList::Texts(texts))),
                    }
                }
                InputList::Texts(texts)
            }
            Some(Element::Ids(ids)) => {
                let mut lists = Vec::with_capacity(capacity);
                lists.push(ids);
                while lists.len() < self.max {
                    match seq.next_element::<Vec<u32>>()? {
                        Some(ids) => lists.push(ids),
                        None => return Ok(Counted::Within(InputList::TokenLists(lists))),
                    }
                }
                InputList::TokenLists(lists)
            }
        };
        let mut count = match &list {
            InputList::Texts(t) => t.len(),
            InputList::TokenLists(l) => l.len(),
            InputList::Tokens(_) => unreachable!("returned above"),
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(if count > self.max {
            Counted::Over(count)
        } else {
            Counted::Within(list)
        })
    }
}

/// The first element of an input array.
enum Element {
    Text(String),
    Id(u32),
    Ids(Vec<u32>),
}

impl<'de> serde::Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a token id or an array of token ids")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Element, E> {
        Ok(Element::Text(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Element, E> {
        Ok(Element::Text(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Element, E> {
        u32::try_from(v)
            .map(Element::Id)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        let mut ids = Vec::new();
        while let Some(id) = seq.next_element::<u32>()? {
            ids.push(id);
        }
        Ok(Element::Ids(ids))
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
                inputs: vec![Input::Text("a".into())],
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
                inputs: vec![Input::Text("a".into()), Input::Text("bé".into())],
                stream: false
            }
        );
        assert_eq!(parse(r#"{"inputs": []}"#, 2).unwrap().inputs.len(), 0);
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
            parse(r#"{"inputs": ["a", "b"]}"#, 2).unwrap().inputs.len(),
            2
        );
    }

    #[test]
    fn input_lists_take_the_shape_of_their_first_element() {
        let list =
            |json: &str, max| InputList::parse(&RawValue::from_string(json.into()).unwrap(), max);
        assert_eq!(
            list(r#"["a", "b"]"#, 4).unwrap(),
            InputList::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            list("[1, 2, 3]", 2).unwrap(),
            InputList::Tokens(vec![1, 2, 3]),
            "ids are one input"
        );
        assert_eq!(
            list("[[1], [2, 3]]", 2).unwrap().into_inputs(),
            vec![Input::Tokens(vec![1]), Input::Tokens(vec![2, 3])]
        );
        assert!(matches!(
            list("[[1], [2], [3]]", 2),
            Err(RequestError::TooManyInputs { count: 3, max: 2 })
        ));
        for mixed in [
            r#"["a", 1]"#,
            r#"[1, "a"]"#,
            "[[1], 2]",
            "[-1]",
            "[4294967296]",
            "[1.5]",
            "[[\"a\"]]",
        ] {
            assert!(
                matches!(list(mixed, 8), Err(RequestError::Shape)),
                "{mixed}"
            );
        }
        assert_eq!(list("[]", 2).unwrap(), InputList::Texts(Vec::new()));
    }
}
