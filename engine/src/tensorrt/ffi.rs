//! Safe handles over the C shim (`engine/tensorrt/shim.h`): an [`Engine`]
//! (a deserialised plan) and its execution [`Context`]s.
//!
//! The workspace denies unsafe code. Calling C cannot be done without it,
//! so this one module opts out and keeps every unsafe block small, each
//! with the reason it is sound; the rest of the TensorRT backend is safe.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// The bindgen output for `shim.h` (see `build.rs`): C names and layout,
/// hence the naming lints; nothing outside this module sees it.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/trt_shim.rs"));
}

/// Room for the shim's error messages; longer ones are truncated.
const ERR_LEN: usize = 1024;

/// The dimensions the shim can carry (TensorRT's `Dims::MAX_DIMS`).
const MAX_DIMS: usize = sys::TRT_MAX_DIMS as usize;

/// Which kind of failure the shim reported (its `TRT_E_*` status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    InvalidArgument,
    NotFound,
    Io,
    TensorRt,
    Cuda,
    Shape,
    Internal,
    /// A status this wrapper does not know; the shim is newer than it.
    Other(i32),
}

impl Status {
    fn from_code(code: i32) -> Self {
        match code {
            sys::TRT_E_INVALID_ARGUMENT => Self::InvalidArgument,
            sys::TRT_E_NOT_FOUND => Self::NotFound,
            sys::TRT_E_IO => Self::Io,
            sys::TRT_E_TENSORRT => Self::TensorRt,
            sys::TRT_E_CUDA => Self::Cuda,
            sys::TRT_E_SHAPE => Self::Shape,
            sys::TRT_E_INTERNAL => Self::Internal,
            other => Self::Other(other),
        }
    }
}

/// A failure reported by the shim, with its message.
#[derive(Debug, Clone)]
pub(crate) struct ShimError {
    pub(crate) status: Status,
    pub(crate) message: String,
}

impl fmt::Display for ShimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ShimError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: Status::InvalidArgument,
            message: message.into(),
        }
    }
}

/// `Ok` for `TRT_OK`, else the status with the message the shim wrote.
fn check(status: i32, err: &[u8; ERR_LEN]) -> Result<(), ShimError> {
    if status == sys::TRT_OK {
        return Ok(());
    }
    let message = CStr::from_bytes_until_nul(err)
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_default();
    let message = if message.is_empty() {
        format!("TensorRT shim failed with status {status}")
    } else {
        message
    };
    Err(ShimError {
        status: Status::from_code(status),
        message,
    })
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DType {
    Float32,
    Float16,
    BFloat16,
    Int8,
    UInt8,
    Int32,
    Int64,
    Bool,
    Fp8,
    Unknown,
}

impl DType {
    fn from_code(code: i32) -> Self {
        match code {
            sys::TRT_DTYPE_FLOAT32 => Self::Float32,
            sys::TRT_DTYPE_FLOAT16 => Self::Float16,
            sys::TRT_DTYPE_BFLOAT16 => Self::BFloat16,
            sys::TRT_DTYPE_INT8 => Self::Int8,
            sys::TRT_DTYPE_UINT8 => Self::UInt8,
            sys::TRT_DTYPE_INT32 => Self::Int32,
            sys::TRT_DTYPE_INT64 => Self::Int64,
            sys::TRT_DTYPE_BOOL => Self::Bool,
            sys::TRT_DTYPE_FP8 => Self::Fp8,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Float32 => "float32",
            Self::Float16 => "float16",
            Self::BFloat16 => "bfloat16",
            Self::Int8 => "int8",
            Self::UInt8 => "uint8",
            Self::Int32 => "int32",
            Self::Int64 => "int64",
            Self::Bool => "bool",
            Self::Fp8 => "fp8",
            Self::Unknown => "unknown",
        })
    }
}

/// What the engine says about one I/O tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub(crate) dtype: DType,
    pub(crate) is_input: bool,
    /// -1 where the dimension is dynamic.
    pub(crate) dims: Vec<i64>,
}

/// A deserialised TensorRT engine (plan).
pub(crate) struct Engine {
    raw: NonNull<sys::trt_engine>,
}

// SAFETY: the engine is immutable once loaded; it may be used and freed
// from any thread (shim.h, "Thread safety").
unsafe impl Send for Engine {}
// SAFETY: `&Engine` only reaches read-only queries (tensor names and
// descriptions), which shim.h allows from several threads at once.
// Creating contexts, the one operation TensorRT does not document as
// thread-safe, needs the engine by value ([`Engine::into_contexts`]).
unsafe impl Sync for Engine {}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("raw", &self.raw)
            .field("io", &self.io_names())
            .finish()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: `raw` came from trt_engine_load and is freed only here.
        // Every context holds an `Arc<Engine>`, so none outlives it.
        unsafe { sys::trt_engine_free(self.raw.as_ptr()) }
    }
}

impl Engine {
    /// Reads and deserialises the plan at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ShimError> {
        let c_path = path_to_cstring(path)?;
        let mut raw: *mut sys::trt_engine = ptr::null_mut();
        let mut err = [0u8; ERR_LEN];
        // SAFETY: `c_path` is NUL-terminated and outlives the call; `raw`
        // and `err` are valid for writes, `err` for ERR_LEN bytes.
        let status =
            unsafe { sys::trt_engine_load(c_path.as_ptr(), &mut raw, err_ptr(&mut err), ERR_LEN) };
        check(status, &err)?;
        let raw = NonNull::new(raw)
            .ok_or_else(|| ShimError::invalid("trt_engine_load succeeded but gave no engine"))?;
        Ok(Self { raw })
    }

    /// Names of all I/O tensors, in the engine's order.
    pub(crate) fn io_names(&self) -> Vec<CString> {
        // SAFETY: `raw` is a live engine.
        let count = unsafe { sys::trt_engine_io_count(self.raw.as_ptr()) };
        (0..count.max(0))
            .filter_map(|i| {
                // SAFETY: `raw` is live and `i` is in range; the name is
                // owned by the engine, and copied before `self` is released.
                let name = unsafe { sys::trt_engine_io_name(self.raw.as_ptr(), i) };
                // SAFETY: a non-NULL result is a NUL-terminated string.
                (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_owned())
            })
            .collect()
    }

    /// Describes tensor `name`, or `None` if the engine has no such tensor.
    pub(crate) fn tensor_info(&self, name: &CStr) -> Result<Option<TensorInfo>, ShimError> {
        let mut info = sys::trt_tensor_info {
            dtype: 0,
            is_input: 0,
            rank: 0,
            dims: [0; MAX_DIMS],
        };
        let mut err = [0u8; ERR_LEN];
        // SAFETY: `raw` is live, `name` is NUL-terminated, `info` and
        // `err` are valid for writes.
        let status = unsafe {
            sys::trt_tensor_info_get(
                self.raw.as_ptr(),
                name.as_ptr(),
                &mut info,
                err_ptr(&mut err),
                ERR_LEN,
            )
        };
        match check(status, &err) {
            Ok(()) => {}
            Err(e) if e.status == Status::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let rank = usize::try_from(info.rank)
            .ok()
            .filter(|&r| r <= MAX_DIMS)
            .ok_or_else(|| ShimError::invalid(format!("tensor {name:?} has rank {}", info.rank)))?;
        Ok(Some(TensorInfo {
            dtype: DType::from_code(info.dtype),
            is_input: info.is_input != 0,
            dims: info.dims[..rank].to_vec(),
        }))
    }

    /// Creates `n` execution contexts. Takes the engine by value because
    /// TensorRT does not promise that creating contexts is thread-safe:
    /// here nothing else can use the engine meanwhile. The contexts share
    /// the engine and keep it alive.
    pub(crate) fn into_contexts(self, n: usize) -> Result<Vec<Context>, ShimError> {
        let engine = Arc::new(self);
        (0..n)
            .map(|_| {
                let mut raw: *mut sys::trt_context = ptr::null_mut();
                let mut err = [0u8; ERR_LEN];
                // SAFETY: `engine.raw` is live and used by no other thread
                // (the Arc has not left this function); `raw` and `err` are
                // valid for writes.
                let status = unsafe {
                    sys::trt_context_create(
                        engine.raw.as_ptr(),
                        &mut raw,
                        err_ptr(&mut err),
                        ERR_LEN,
                    )
                };
                check(status, &err)?;
                let raw = NonNull::new(raw).ok_or_else(|| {
                    ShimError::invalid("trt_context_create succeeded but gave no context")
                })?;
                Ok(Context {
                    raw,
                    engine: Arc::clone(&engine),
                })
            })
            .collect()
    }
}

/// One execution context: TensorRT state for one run at a time, with its
/// CUDA stream and device buffers.
pub(crate) struct Context {
    raw: NonNull<sys::trt_context>,
    // Dropped after `raw` is freed (Drop runs before fields are dropped),
    // so the engine outlives its context as shim.h requires.
    engine: Arc<Engine>,
}

// SAFETY: a context may be used from any thread, one at a time (shim.h,
// "Thread safety"); `run` takes `&mut self`, so one at a time is enforced
// by the borrow checker. Context is deliberately not Sync.
unsafe impl Send for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("raw", &self.raw)
            .field("engine", &self.engine.raw)
            .finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `raw` came from trt_context_create and is freed only
        // here; its engine is still alive (see the `engine` field).
        unsafe { sys::trt_context_free(self.raw.as_ptr()) }
    }
}

/// Host data for one input.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HostData<'a> {
    Int32(&'a [i32]),
    Int64(&'a [i64]),
}

/// One input of a run.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub(crate) name: &'a CStr,
    pub(crate) dims: &'a [i64],
    pub(crate) data: HostData<'a>,
}

/// One float32 output of a run: the shim fills `data` and says its shape.
#[derive(Debug)]
pub(crate) struct Output<'a> {
    pub(crate) name: &'a CStr,
    pub(crate) data: &'a mut [f32],
    /// The shape the engine produced; set by a successful run.
    pub(crate) dims: Vec<i64>,
}

impl Context {
    /// Runs once, synchronously. Blocks the thread for the whole inference.
    pub(crate) fn run(
        &mut self,
        inputs: &[Input<'_>],
        outputs: &mut [Output<'_>],
    ) -> Result<(), ShimError> {
        let mut c_inputs = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (dtype, data, bytes): (i32, *const c_void, usize) = match input.data {
                HostData::Int32(v) => (sys::TRT_DTYPE_INT32, v.as_ptr().cast(), size_of_val(v)),
                HostData::Int64(v) => (sys::TRT_DTYPE_INT64, v.as_ptr().cast(), size_of_val(v)),
            };
            let (rank, dims) = c_dims(input.name, input.dims)?;
            c_inputs.push(sys::trt_input {
                name: input.name.as_ptr(),
                dtype,
                rank,
                dims,
                data,
                bytes,
            });
        }
        let mut c_outputs: Vec<sys::trt_output> = outputs
            .iter_mut()
            .map(|output| sys::trt_output {
                name: output.name.as_ptr(),
                dtype: sys::TRT_DTYPE_FLOAT32,
                data: output.data.as_mut_ptr().cast(),
                capacity: size_of_val(output.data),
                rank: 0,
                dims: [0; MAX_DIMS],
                bytes: 0,
            })
            .collect();

        let mut err = [0u8; ERR_LEN];
        // SAFETY: `&mut self` makes this the context's only user. Every
        // pointer in `c_inputs`/`c_outputs` borrows from `inputs`/`outputs`
        // (names, and host buffers whose `bytes`/`capacity` are their true
        // sizes), all of which outlive the call; the shim writes at most
        // `capacity` bytes to an output, keeps no pointer after returning,
        // and waits for its stream before returning even on failure, so no
        // copy touches the buffers afterwards.
        let status = unsafe {
            sys::trt_run(
                self.raw.as_ptr(),
                c_inputs.as_ptr(),
                c_inputs.len(),
                c_outputs.as_mut_ptr(),
                c_outputs.len(),
                err_ptr(&mut err),
                ERR_LEN,
            )
        };
        check(status, &err)?;
        for (output, c) in outputs.iter_mut().zip(&c_outputs) {
            let rank = usize::try_from(c.rank).unwrap_or(0).min(MAX_DIMS);
            output.dims = c.dims[..rank].to_vec();
        }
        Ok(())
    }
}

/// A shape as the shim takes it: rank and a fixed array.
fn c_dims(name: &CStr, dims: &[i64]) -> Result<(i32, [i64; MAX_DIMS]), ShimError> {
    let mut out = [0i64; MAX_DIMS];
    out.get_mut(..dims.len())
        .ok_or_else(|| ShimError::invalid(format!("input {name:?} has more than {MAX_DIMS} dims")))?
        .copy_from_slice(dims);
    let rank = i32::try_from(dims.len()).map_err(|_| ShimError::invalid("too many dims"))?;
    Ok((rank, out))
}

fn err_ptr(err: &mut [u8; ERR_LEN]) -> *mut c_char {
    err.as_mut_ptr().cast()
}

fn path_to_cstring(path: &Path) -> Result<CString, ShimError> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| ShimError::invalid(format!("plan path {} is not UTF-8", path.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| {
        ShimError::invalid(format!("plan path {} contains a NUL byte", path.display()))
    })
}
