//! The TensorRT encoder (GPU): runs a serialised TensorRT engine ("plan",
//! e.g. built by `trtexec` from a BERT-style ONNX export) behind the
//! [`Encoder`] trait. Built only with the cargo feature `tensorrt`; how to
//! build the plan and the engine on a GPU host is in `engine/TENSORRT.md`.
//!
//! The plan takes `input_ids` and `attention_mask` (and `token_type_ids` if
//! it has that input), each `[batch, seq]` int64 or int32, and gives
//! `last_hidden_state`, float32 `[batch, seq, dim]`. The C++ side is a thin
//! C shim (`engine/tensorrt/shim.h`) wrapped safely in `ffi`.

mod ffi;

use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::text::encoder::{Encoder, EncoderError, Hidden, ModelOutput, TokenBatch};
use ffi::{Context, DType, Engine, HostData, Input, Output, ShimError};

const INPUT_IDS: &CStr = c"input_ids";
const ATTENTION_MASK: &CStr = c"attention_mask";
const TOKEN_TYPE_IDS: &CStr = c"token_type_ids";
const HIDDEN: &CStr = c"last_hidden_state";

/// The integer type an input of the plan takes. Exports differ (ONNX
/// models use int64; TensorRT builds often narrow to int32), so it is read
/// from the plan rather than assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    Int32,
    Int64,
}

/// A text encoder running a TensorRT plan on the GPU.
///
/// Concurrency: a TensorRT execution context runs one inference at a time
/// and reserves activation memory for the largest shape of the plan's
/// profile when it is created. Creating one per call would pay that
/// allocation on every batch, so the encoder keeps a small fixed pool made
/// at load time, each context behind a `tokio::sync::Mutex` (a std Mutex is
/// banned by clippy.toml; this lock is never held across an await). A call
/// takes the first free context, else waits for one with `blocking_lock`,
/// which is allowed because [`Encoder::encode`] runs on a blocking thread.
/// One context (the [`TensorRtEncoder::load`] default) suits one GPU fed
/// by the replica's batcher; more let copies of one batch overlap compute
/// of another, for more device memory.
pub struct TensorRtEncoder {
    plan: PathBuf,
    dim: usize,
    ids: IdType,
    mask: IdType,
    /// `None` when the plan has no `token_type_ids` input.
    token_types: Option<IdType>,
    contexts: Box<[tokio::sync::Mutex<Context>]>,
    /// Where the next call starts looking for a free context, so calls
    /// spread over the pool instead of all contending for the first.
    next: AtomicUsize,
}

impl fmt::Debug for TensorRtEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorRtEncoder")
            .field("plan", &self.plan)
            .field("dim", &self.dim)
            .field("ids", &self.ids)
            .field("mask", &self.mask)
            .field("token_types", &self.token_types)
            .field("contexts", &self.contexts.len())
            .finish()
    }
}

impl TensorRtEncoder {
    /// Loads a plan with one execution context. Blocks (deserialising a
    /// plan takes seconds on a large model).
    pub fn load(plan: &Path) -> Result<Self, EncoderError> {
        Self::load_with_contexts(plan, 1)
    }

    /// Loads a plan with `contexts` execution contexts (at least one), so
    /// that many batches can be in flight on the GPU at once.
    pub fn load_with_contexts(plan: &Path, contexts: usize) -> Result<Self, EncoderError> {
        let engine = Engine::load(plan).map_err(|e| EncoderError(e.message))?;
        let ids = id_input(&engine, INPUT_IDS)?
            .ok_or_else(|| missing(&engine, "the plan has no `input_ids` input"))?;
        let mask = id_input(&engine, ATTENTION_MASK)?
            .ok_or_else(|| missing(&engine, "the plan has no `attention_mask` input"))?;
        let token_types = id_input(&engine, TOKEN_TYPE_IDS)?;
        for name in engine.io_names() {
            let known = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS].contains(&name.as_c_str());
            let info = engine
                .tensor_info(&name)
                .map_err(|e| EncoderError(e.message))?;
            if !known && info.is_some_and(|i| i.is_input) {
                return Err(EncoderError(format!(
                    "the plan needs an input {name:?}, which a text encoder cannot provide \
                     (supported: input_ids, attention_mask, token_type_ids)"
                )));
            }
        }
        let dim = hidden_dim(&engine)?;
        let contexts = engine
            .into_contexts(contexts.max(1))
            .map_err(|e| EncoderError(format!("cannot create an execution context: {e}")))?;
        Ok(Self {
            plan: plan.to_owned(),
            dim,
            ids,
            mask,
            token_types,
            contexts: contexts.into_iter().map(tokio::sync::Mutex::new).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Width of one token's hidden state.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Runs `f` on a free context, waiting for one if all are busy.
    fn with_context<T>(&self, f: impl FnOnce(&mut Context) -> T) -> T {
        let n = self.contexts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(mut context) = self.contexts[(start + i) % n].try_lock() {
                return f(&mut context);
            }
        }
        f(&mut self.contexts[start].blocking_lock())
    }

    /// Runs one batch: its hidden states. A plan's output is always
    /// `last_hidden_state`, so TensorRT serves embedding models only.
    pub fn hidden_states(&self, batch: &TokenBatch) -> Result<Hidden, EncoderError> {
        let tokens = batch
            .batch
            .checked_mul(batch.seq_len)
            .ok_or_else(|| EncoderError("batch too large".into()))?;
        let mut columns = vec![
            ("input_ids", &batch.input_ids),
            ("attention_mask", &batch.attention_mask),
        ];
        if self.token_types.is_some() {
            columns.push(("token_type_ids", &batch.token_type_ids));
        }
        for (name, column) in columns {
            if column.len() != tokens {
                return Err(EncoderError(format!(
                    "`{name}` has {} values for a [{}, {}] batch",
                    column.len(),
                    batch.batch,
                    batch.seq_len
                )));
            }
        }
        if tokens == 0 {
            // TensorRT profiles start at 1; there is nothing to run anyway.
            return Ok(Hidden {
                values: Vec::new(),
                dim: self.dim,
            });
        }
        let len = tokens
            .checked_mul(self.dim)
            .ok_or_else(|| EncoderError("batch too large".into()))?;
        let too_long = |_| EncoderError("batch too large".into());
        let dims = [
            i64::try_from(batch.batch).map_err(too_long)?,
            i64::try_from(batch.seq_len).map_err(too_long)?,
        ];

        let ids = HostIds::new(self.ids, &batch.input_ids, "input_ids")?;
        let mask = HostIds::new(self.mask, &batch.attention_mask, "attention_mask")?;
        let types = self
            .token_types
            .map(|t| HostIds::new(t, &batch.token_type_ids, "token_type_ids"))
            .transpose()?;
        let mut inputs = vec![
            Input {
                name: INPUT_IDS,
                dims: &dims,
                data: ids.host(),
            },
            Input {
                name: ATTENTION_MASK,
                dims: &dims,
                data: mask.host(),
            },
        ];
        if let Some(types) = &types {
            inputs.push(Input {
                name: TOKEN_TYPE_IDS,
                dims: &dims,
                data: types.host(),
            });
        }

        let mut values = vec![0f32; len];
        let mut outputs = [Output {
            name: HIDDEN,
            data: &mut values,
            dims: Vec::new(),
        }];
        self.with_context(|context| context.run(&inputs, &mut outputs))
            .map_err(|e: ShimError| EncoderError(format!("TensorRT inference failed: {e}")))?;
        let want = [dims[0], dims[1], self.dim as i64];
        if outputs[0].dims != want {
            return Err(EncoderError(format!(
                "expected a {want:?} output, got {:?}",
                outputs[0].dims
            )));
        }
        Ok(Hidden {
            values,
            dim: self.dim,
        })
    }
}

impl Encoder for TensorRtEncoder {
    fn runtime(&self) -> &'static str {
        "tensorrt"
    }

    fn encode(&self, batch: &TokenBatch) -> Result<ModelOutput, EncoderError> {
        self.hidden_states(batch).map(ModelOutput::from)
    }

    /// One batch per execution context.
    fn parallel_runs(&self) -> usize {
        self.contexts.len()
    }
}

/// Token ids in the type the plan takes: borrowed when it takes int64 (no
/// copy), narrowed to int32 otherwise.
enum HostIds<'a> {
    Int64(&'a [i64]),
    Int32(Vec<i32>),
}

impl<'a> HostIds<'a> {
    fn new(ty: IdType, values: &'a [i64], name: &str) -> Result<Self, EncoderError> {
        match ty {
            IdType::Int64 => Ok(Self::Int64(values)),
            IdType::Int32 => values
                .iter()
                .map(|&v| i32::try_from(v))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Int32)
                .map_err(|_| {
                    EncoderError(format!(
                        "`{name}` has a value outside int32, the type the plan takes"
                    ))
                }),
        }
    }

    fn host(&self) -> HostData<'_> {
        match self {
            Self::Int64(v) => HostData::Int64(v),
            Self::Int32(v) => HostData::Int32(v),
        }
    }
}

/// The integer type of input `name`, or `None` if the plan lacks it.
fn id_input(engine: &Engine, name: &CStr) -> Result<Option<IdType>, EncoderError> {
    let shown = name.to_string_lossy();
    let Some(info) = engine
        .tensor_info(name)
        .map_err(|e| EncoderError(e.message))?
    else {
        return Ok(None);
    };
    if !info.is_input {
        return Err(EncoderError(format!(
            "`{shown}` is an output of the plan, not an input"
        )));
    }
    if info.dims.len() != 2 {
        return Err(EncoderError(format!(
            "input `{shown}` has shape {:?}; expected [batch, seq]",
            info.dims
        )));
    }
    match info.dtype {
        DType::Int64 => Ok(Some(IdType::Int64)),
        DType::Int32 => Ok(Some(IdType::Int32)),
        other => Err(EncoderError(format!(
            "input `{shown}` is {other}; expected int64 or int32"
        ))),
    }
}

/// The `dim` of the `[batch, seq, dim]` float32 output, which must be
/// fixed in the plan so output buffers can be sized before a run.
fn hidden_dim(engine: &Engine) -> Result<usize, EncoderError> {
    let info = engine
        .tensor_info(HIDDEN)
        .map_err(|e| EncoderError(e.message))?
        .ok_or_else(|| missing(engine, "the plan has no `last_hidden_state` output"))?;
    if info.is_input {
        return Err(EncoderError(
            "`last_hidden_state` is an input of the plan, not an output".into(),
        ));
    }
    if info.dtype != DType::Float32 {
        return Err(EncoderError(format!(
            "output `last_hidden_state` is {}; expected float32",
            info.dtype
        )));
    }
    match info.dims[..] {
        [_, _, dim] if dim > 0 => {
            usize::try_from(dim).map_err(|_| EncoderError("dim too large".into()))
        }
        ref other => Err(EncoderError(format!(
            "output `last_hidden_state` has shape {other:?}; expected [batch, seq, dim] with a fixed dim"
        ))),
    }
}

fn missing(engine: &Engine, what: &str) -> EncoderError {
    EncoderError(format!("{what} (its tensors: {:?})", engine.io_names()))
}

#[cfg(all(test, tensorrt_mock))]
mod tests {
    //! End-to-end tests over the CPU mock shim (`IGW_TENSORRT_MOCK=1`): the
    //! real wrapper, the real C API, a stand-in for TensorRT.

    use super::*;

    const PLAN: &str = "igw-trt-mock-plan 1
# a comment, and a blank line

dim 4
seed 42
input input_ids int64
input attention_mask int64
input token_type_ids int32
output last_hidden_state float32
max_batch 8
max_seq 16
";

    fn write_plan(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("model.plan");
        std::fs::write(&path, body).unwrap();
        path
    }

    /// The mock's formula (mock_shim.c), computed independently.
    fn expected(batch: &TokenBatch, dim: usize, seed: u64, token_types: bool) -> Vec<f32> {
        let mut out = Vec::new();
        for i in 0..batch.batch * batch.seq_len {
            let id = batch.input_ids[i] as u64;
            let tt = if token_types {
                batch.token_type_ids[i] as u64
            } else {
                0
            };
            let pos = (i % batch.seq_len) as u64;
            for j in 0..dim as u64 {
                let k = id
                    .wrapping_mul(131)
                    .wrapping_add(pos * 31)
                    .wrapping_add(j * 7)
                    .wrapping_add(tt.wrapping_mul(17))
                    .wrapping_add(seed);
                out.push(if batch.attention_mask[i] == 0 {
                    0.0
                } else {
                    (k % 1009) as f32 / 1009.0 - 0.5
                });
            }
        }
        out
    }

    /// Two rows, the second padded.
    fn sample() -> TokenBatch {
        TokenBatch {
            input_ids: vec![101, 7592, 2088, 102, 101, 2023, 102, 0],
            attention_mask: vec![1, 1, 1, 1, 1, 1, 1, 0],
            token_type_ids: vec![0, 0, 1, 1, 0, 0, 0, 0],
            batch: 2,
            seq_len: 4,
        }
    }

    fn load_err(plan: &Path) -> String {
        TensorRtEncoder::load(plan).unwrap_err().0
    }

    #[test]
    fn the_engine_text_pipeline_runs_on_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let plan = write_plan(&dir, &PLAN.replace("max_seq 16", "max_seq 512"));
        let tokenizer =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
        let backend = config::EngineBackend::TensorRt(config::TextModelSettings {
            model: plan,
            tokenizer,
            runtime_library: None,
            max_tokens: 256,
            max_request_tokens: config::TextModelSettings::DEFAULT_MAX_REQUEST_TOKENS,
            threads: 0,
        });
        let model = crate::text::TextModel::load(&backend).unwrap();
        assert_eq!(model.runtime(), "tensorrt");
        let out = model
            .infer(&[
                crate::backend::Input::Text("hello world".to_owned()),
                crate::backend::Input::Text("a longer second sentence".to_owned()),
            ])
            .unwrap();
        let out: Vec<_> = out
            .into_iter()
            .map(|o| match o {
                crate::backend::Output::Embedding(e) => e,
                other => panic!("not an embedding: {other:?}"),
            })
            .collect();
        assert_eq!(out[0].tokens, 4); // [CLS] hello world [SEP]
        for e in &out {
            assert_eq!(e.embedding.len(), 4);
            let norm: f32 = e.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        assert_ne!(out[0].embedding, out[1].embedding);
    }

    #[test]
    fn encodes_a_batch_like_the_mock_formula() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = TensorRtEncoder::load(&write_plan(&dir, PLAN)).unwrap();
        assert_eq!(encoder.runtime(), "tensorrt");
        assert_eq!(encoder.dim(), 4);
        let batch = sample();
        let hidden = encoder.hidden_states(&batch).unwrap();
        assert_eq!(hidden.dim, 4);
        assert_eq!(hidden.values.len(), 2 * 4 * 4);
        assert_eq!(hidden.values, expected(&batch, 4, 42, true));
        // Padding is zero, real tokens are not.
        assert!(hidden.values[28..].iter().all(|&v| v == 0.0));
        assert!(hidden.values[..4].iter().any(|&v| v != 0.0));
        // Same input, same output: the context is reusable.
        assert_eq!(encoder.hidden_states(&batch).unwrap(), hidden);
    }

    #[test]
    fn converts_ids_for_int32_plans() {
        let dir = tempfile::tempdir().unwrap();
        let plan = write_plan(&dir, &PLAN.replace("int64", "int32"));
        let encoder = TensorRtEncoder::load(&plan).unwrap();
        let batch = sample();
        assert_eq!(
            encoder.hidden_states(&batch).unwrap().values,
            expected(&batch, 4, 42, true)
        );

        let mut wide = sample();
        wide.input_ids[0] = i64::from(i32::MAX) + 1;
        let err = encoder.hidden_states(&wide).unwrap_err().0;
        assert!(
            err.contains("`input_ids` has a value outside int32"),
            "{err}"
        );
    }

    #[test]
    fn token_type_ids_are_optional() {
        let dir = tempfile::tempdir().unwrap();
        let plan = write_plan(&dir, &PLAN.replace("input token_type_ids int32\n", ""));
        let encoder = TensorRtEncoder::load(&plan).unwrap();
        let mut batch = sample();
        batch.token_type_ids.clear(); // not sent, so not checked
        assert_eq!(
            encoder.hidden_states(&batch).unwrap().values,
            expected(&batch, 4, 42, false)
        );
    }

    #[test]
    fn an_empty_batch_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = TensorRtEncoder::load(&write_plan(&dir, PLAN)).unwrap();
        let hidden = encoder.hidden_states(&TokenBatch::default()).unwrap();
        assert!(hidden.values.is_empty());
        assert_eq!(hidden.dim, 4);
    }

    #[test]
    fn a_pool_of_contexts_serves_concurrent_calls() {
        let dir = tempfile::tempdir().unwrap();
        let encoder = TensorRtEncoder::load_with_contexts(&write_plan(&dir, PLAN), 2).unwrap();
        let batch = sample();
        let want = expected(&batch, 4, 42, true);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_eq!(encoder.hidden_states(&batch).unwrap().values, want);
                    }
                });
            }
        });
    }

    #[test]
    fn a_missing_plan_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.plan");
        let err = load_err(&path);
        assert!(err.contains("cannot open plan file"), "{err}");
        assert!(err.contains("absent.plan"), "{err}");
    }

    #[test]
    fn a_malformed_plan_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_err(&write_plan(&dir, "\u{7f}ELF not a plan\n"));
        assert!(err.contains("is not a mock TensorRT plan"), "{err}");
        let err = load_err(&write_plan(&dir, ""));
        assert!(err.contains("is empty"), "{err}");
        let err = load_err(&write_plan(&dir, &PLAN.replace("dim 4", "dim four")));
        assert!(err.contains("bad dim"), "{err}");
    }

    #[test]
    fn a_plan_with_the_wrong_tensors_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                PLAN.replace("input attention_mask int64\n", ""),
                "the plan has no `attention_mask` input",
            ),
            (
                PLAN.replace("output last_hidden_state float32", "output pooled float32"),
                "the plan has no `last_hidden_state` output",
            ),
            (
                PLAN.replace(
                    "output last_hidden_state float32",
                    "output last_hidden_state int32",
                ),
                "output `last_hidden_state` is int32; expected float32",
            ),
            (
                PLAN.replace("input attention_mask int64", "input attention_mask float32"),
                "input `attention_mask` is float32; expected int64 or int32",
            ),
            (
                format!("{PLAN}input position_ids int64\n"),
                "the plan needs an input \"position_ids\"",
            ),
        ];
        for (plan, want) in cases {
            let err = load_err(&write_plan(&dir, &plan));
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn shapes_outside_the_profile_and_bad_batches_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PLAN.replace("max_batch 8", "max_batch 1");
        let encoder = TensorRtEncoder::load(&write_plan(&dir, &plan)).unwrap();
        let err = encoder.hidden_states(&sample()).unwrap_err().0;
        assert!(err.starts_with("TensorRT inference failed: "), "{err}");
        assert!(err.contains("rejected (profile 0 allows"), "{err}");

        let mut short = sample();
        short.attention_mask.pop();
        let err = encoder.hidden_states(&short).unwrap_err().0;
        assert_eq!(err, "`attention_mask` has 7 values for a [2, 4] batch");

        // The encoder still works after failures.
        let mut one = sample();
        one.batch = 1;
        for column in [
            &mut one.input_ids,
            &mut one.attention_mask,
            &mut one.token_type_ids,
        ] {
            column.truncate(4);
        }
        assert_eq!(
            encoder.hidden_states(&one).unwrap().values,
            expected(&one, 4, 42, true)
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TensorRtEncoder>();
    }
}
