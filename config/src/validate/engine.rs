//! `[engine]` tables: the backend, its files and the replica's queueing.

use std::path::PathBuf;
use std::time::Duration;

use super::Checker;
use crate::engine::*;
use crate::path::ConfigPath;
use crate::raw::RawEngine;

const SYNTHETIC_KEYS: [&str; 5] = [
    "fixed_ms",
    "per_item_ms",
    "jitter_ms",
    "load_delay_ms",
    "error_percent",
];
const MODEL_KEYS: [&str; 6] = [
    "model",
    "tokenizer",
    "onnxruntime",
    "max_tokens",
    "max_request_tokens",
    "threads",
];

/// `deployment_concurrency` is set when the table belongs to a deployment,
/// whose `predict_concurrency` the replica then uses.
pub(super) fn engine(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    raw: RawEngine,
    deployment_concurrency: Option<u32>,
) -> Option<EngineSettings> {
    let predict_concurrency = match deployment_concurrency {
        Some(n) => {
            if raw.predict_concurrency.is_some() {
                c.error(
                    path.key("predict_concurrency"),
                    "set `predict_concurrency` on the deployment, not in its engine table",
                );
            }
            n
        }
        None => c.ranged(
            path,
            "predict_concurrency",
            raw.predict_concurrency,
            1,
            1,
            10_000,
        ),
    };
    let queue_size = c.ranged(path, "queue_size", raw.queue_size, 16, 0, 1_000_000);
    let max_batch_size = c.ranged(path, "max_batch_size", raw.max_batch_size, 1, 1, 4096);
    if max_batch_size > predict_concurrency {
        c.error(
            path.key("max_batch_size"),
            format!(
                "`max_batch_size` ({max_batch_size}) exceeds `predict_concurrency` ({predict_concurrency}): requests wait for a running slot before they can join a batch, so batches could never fill"
            ),
        );
    }
    let max_queue_delay = ms(c.ranged(
        path,
        "max_queue_delay_ms",
        raw.max_queue_delay_ms,
        2,
        0,
        10_000,
    ));
    let max_inputs = max_inputs(c, path, raw.max_inputs);
    let backend = backend(c, path, &raw);
    Some(EngineSettings {
        backend: backend?,
        predict_concurrency,
        queue_size,
        max_batch_size,
        max_queue_delay,
        max_inputs,
        watch: raw.watch.unwrap_or(false),
    })
}

/// `max_inputs`: how many inputs one request may carry.
fn max_inputs(c: &mut Checker<'_>, path: &ConfigPath, value: Option<i64>) -> u32 {
    let range = EngineSettings::MAX_INPUTS_RANGE;
    c.ranged(
        path,
        "max_inputs",
        value,
        EngineSettings::DEFAULT_MAX_INPUTS,
        *range.start(),
        *range.end(),
    )
}

/// `max_request_tokens` of a text model: in range, and no smaller than
/// one input may be.
fn max_request_tokens(
    c: &mut Checker<'_>,
    path: &ConfigPath,
    value: Option<i64>,
    settings: &mut TextModelSettings,
) {
    let range = TextModelSettings::MAX_REQUEST_TOKENS_RANGE;
    settings.max_request_tokens = c.ranged(
        path,
        "max_request_tokens",
        value,
        TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS,
        *range.start(),
        *range.end(),
    );
    if let Some(problem) = settings.request_tokens_problem() {
        c.error(path.key("max_request_tokens"), problem);
    }
}

fn backend(c: &mut Checker<'_>, path: &ConfigPath, raw: &RawEngine) -> Option<EngineBackend> {
    let set = |key: &str| match key {
        "model" => raw.model.is_some(),
        "tokenizer" => raw.tokenizer.is_some(),
        "onnxruntime" => raw.onnxruntime.is_some(),
        "max_tokens" => raw.max_tokens.is_some(),
        "max_request_tokens" => raw.max_request_tokens.is_some(),
        "threads" => raw.threads.is_some(),
        "fixed_ms" => raw.fixed_ms.is_some(),
        "per_item_ms" => raw.per_item_ms.is_some(),
        "jitter_ms" => raw.jitter_ms.is_some(),
        "load_delay_ms" => raw.load_delay_ms.is_some(),
        _ => raw.error_percent.is_some(),
    };
    let misplaced = |c: &mut Checker<'_>, keys: &[&str], backend: &str| {
        for key in keys.iter().filter(|k| set(k)) {
            c.error(
                path.key(key),
                format!("`{key}` does not apply to backend = \"{backend}\""),
            );
        }
    };
    match c.required(path, "backend", &raw.backend)? {
        "synthetic" => {
            misplaced(c, &MODEL_KEYS, "synthetic");
            let mut profile = |key, value| ms(c.ranged(path, key, value, 0, 0, 600_000));
            Some(EngineBackend::Synthetic(SyntheticSettings {
                fixed: profile("fixed_ms", raw.fixed_ms),
                per_item: profile("per_item_ms", raw.per_item_ms),
                jitter: profile("jitter_ms", raw.jitter_ms),
                load_delay: profile("load_delay_ms", raw.load_delay_ms),
                error_percent: c.ranged(path, "error_percent", raw.error_percent, 0, 0, 100),
            }))
        }
        name @ ("onnx" | "tensorrt") => {
            misplaced(c, &SYNTHETIC_KEYS, name);
            if name == "tensorrt" && raw.onnxruntime.is_some() {
                c.error(
                    path.key("onnxruntime"),
                    "`onnxruntime` does not apply to backend = \"tensorrt\"",
                );
            }
            let model = PathBuf::from(c.required(path, "model", &raw.model)?);
            let tokenizer = match &raw.tokenizer {
                Some(t) => PathBuf::from(t),
                None => model.with_file_name("tokenizer.json"),
            };
            let mut settings = TextModelSettings {
                tokenizer,
                runtime_library: raw.onnxruntime.as_ref().map(PathBuf::from),
                max_tokens: c.ranged(path, "max_tokens", raw.max_tokens, 256, 1, 65_536),
                max_request_tokens: TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS,
                threads: c.ranged(path, "threads", raw.threads, 0, 0, 1024),
                model,
            };
            max_request_tokens(c, path, raw.max_request_tokens, &mut settings);
            Some(if name == "onnx" {
                EngineBackend::Onnx(settings)
            } else {
                EngineBackend::TensorRt(settings)
            })
        }
        other => {
            c.error(
                path.key("backend"),
                format!("unknown backend `{other}`: use \"onnx\", \"tensorrt\" or \"synthetic\""),
            );
            None
        }
    }
}

fn ms(n: u32) -> Duration {
    Duration::from_millis(u64::from(n))
}
