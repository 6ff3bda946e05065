/*
 * A small C API over TensorRT's C++ runtime, so Rust can call it through
 * bindgen without touching C++ classes.
 *
 * Two implementations share this header:
 *   shim.cpp       the real one (TensorRT 10 + CUDA runtime), for GPU hosts;
 *   mock_shim.c    a CPU stand-in that reads a tiny text "plan", for tests.
 *
 * Rules every function follows, so the Rust side can stay simple:
 *   - plain C types only; handles are opaque pointers;
 *   - nothing aborts or throws: a failure returns a TRT_E_* status and, when
 *     `err` is not NULL, writes a NUL-terminated message into err[0..err_len)
 *     (truncated if it does not fit);
 *   - host buffers passed in are only used during the call; nothing keeps
 *     them after it returns.
 *
 * Thread safety: an engine may be shared between threads once loaded (only
 * read-only queries and trt_context_create use it). A context is used by one
 * thread at a time. A context must be freed before its engine.
 */
#ifndef IGW_TRT_SHIM_H
#define IGW_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Stable: the Rust side matches on them. */
#define TRT_OK 0
#define TRT_E_INVALID_ARGUMENT 1 /* a NULL handle, bad length, wrong dtype... */
#define TRT_E_NOT_FOUND 2        /* no I/O tensor of that name */
#define TRT_E_IO 3               /* the plan file could not be read */
#define TRT_E_TENSORRT 4         /* TensorRT refused (deserialise, enqueue) */
#define TRT_E_CUDA 5             /* a CUDA call failed */
#define TRT_E_SHAPE 6            /* shape outside the engine's profile, or
                                    an output buffer too small */
#define TRT_E_INTERNAL 7         /* anything else (e.g. out of host memory) */

/* Element types. Our own numbering, independent of nvinfer1::DataType. */
#define TRT_DTYPE_UNKNOWN 0
#define TRT_DTYPE_FLOAT32 1
#define TRT_DTYPE_FLOAT16 2
#define TRT_DTYPE_BFLOAT16 3
#define TRT_DTYPE_INT8 4
#define TRT_DTYPE_UINT8 5
#define TRT_DTYPE_INT32 6
#define TRT_DTYPE_INT64 7
#define TRT_DTYPE_BOOL 8
#define TRT_DTYPE_FP8 9

/* The most dimensions a tensor can have (TensorRT's Dims::MAX_DIMS). */
#define TRT_MAX_DIMS 8

/* A deserialised engine (plan). */
typedef struct trt_engine trt_engine;
/* One execution context with its CUDA stream and device buffers. */
typedef struct trt_context trt_context;

/* What the engine says about one I/O tensor. */
typedef struct trt_tensor_info {
    int32_t dtype;               /* TRT_DTYPE_* */
    int32_t is_input;            /* 1 for an input, 0 for an output */
    int32_t rank;                /* number of dims used in `dims` */
    int64_t dims[TRT_MAX_DIMS];  /* -1 where the dimension is dynamic */
} trt_tensor_info;

/* One input for trt_run: a host buffer and the shape to run it with. */
typedef struct trt_input {
    const char *name;
    int32_t dtype;               /* must equal the engine's dtype */
    int32_t rank;
    int64_t dims[TRT_MAX_DIMS];
    const void *data;            /* host memory, `bytes` long */
    size_t bytes;                /* must equal volume(dims) * element size */
} trt_input;

/* One output for trt_run: a host buffer to copy the result into. */
typedef struct trt_output {
    const char *name;
    int32_t dtype;               /* must equal the engine's dtype */
    void *data;                  /* host memory, `capacity` bytes */
    size_t capacity;
    /* Written by trt_run: the shape the engine produced, and its size. */
    int32_t rank;
    int64_t dims[TRT_MAX_DIMS];
    size_t bytes;
} trt_output;

/* Reads and deserialises a plan file. On success *out owns the engine. */
int32_t trt_engine_load(const char *path, trt_engine **out, char *err, size_t err_len);

/* Frees an engine (NULL is allowed). Its contexts must be freed first. */
void trt_engine_free(trt_engine *engine);

/* Number of I/O tensors, or -1 for a NULL engine. */
int32_t trt_engine_io_count(const trt_engine *engine);

/* Name of I/O tensor `index`, owned by the engine; NULL if out of range. */
const char *trt_engine_io_name(const trt_engine *engine, int32_t index);

/* Describes the I/O tensor `name`; TRT_E_NOT_FOUND if there is none. */
int32_t trt_tensor_info_get(const trt_engine *engine, const char *name, trt_tensor_info *out,
                            char *err, size_t err_len);

/* Creates an execution context (and its stream) on the current device. */
int32_t trt_context_create(trt_engine *engine, trt_context **out, char *err, size_t err_len);

/* Frees a context (NULL is allowed), waiting for its stream first. */
void trt_context_free(trt_context *context);

/*
 * Runs the engine once, synchronously: sets the input shapes, copies the
 * inputs to the device, enqueues, copies the outputs back and waits. Every
 * input of the engine must be given; outputs not asked for are computed and
 * dropped. On any failure the stream has been waited for before returning,
 * so the caller's buffers are free again either way.
 */
int32_t trt_run(trt_context *context, const trt_input *inputs, size_t n_inputs,
                trt_output *outputs, size_t n_outputs, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* IGW_TRT_SHIM_H */
