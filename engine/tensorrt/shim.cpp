// The real implementation of shim.h over TensorRT 10 and the CUDA runtime.
//
// Built by build.rs only when TENSORRT_ROOT and CUDA are found. Every entry
// point catches C++ exceptions and turns them into a status, because an
// exception crossing into Rust would abort the replica.

#include "shim.h"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// TensorRT reports the reason for most failures through its logger, not
// through return values. The logger keeps the last error of each thread;
// every entry point clears it first and appends it to its own message, so a
// failure on one thread never borrows another thread's message.
thread_local std::string t_last_error;

class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char *msg) noexcept override {
        if (msg == nullptr) {
            return;
        }
        if (severity <= Severity::kERROR) {
            try {
                t_last_error = msg;
            } catch (...) {
                // Out of memory while recording an error: keep the old one.
            }
        }
        // Warnings go to stderr (the replica's log); errors also reach the
        // caller through the returned message.
        if (severity <= Severity::kWARNING) {
            const char *level = severity == Severity::kWARNING ? "warning" : "error";
            std::fprintf(stderr, "[tensorrt %s] %s\n", level, msg);
        }
    }
};

// One logger for the process. Deliberately leaked: a runtime must not
// outlive its logger, and an engine may still be freed during exit.
Logger &logger() {
    static Logger *instance = new Logger();
    return *instance;
}

int32_t fail(char *err, size_t err_len, int32_t status, const std::string &msg) {
    if (err != nullptr && err_len > 0) {
        std::snprintf(err, err_len, "%s", msg.c_str());
    }
    return status;
}

// `what`, followed by TensorRT's own explanation when it logged one.
std::string with_trt_reason(const std::string &what) {
    if (t_last_error.empty()) {
        return what;
    }
    return what + ": " + t_last_error;
}

std::string cuda_reason(const std::string &what, cudaError_t code) {
    return what + ": " + cudaGetErrorName(code) + " (" + cudaGetErrorString(code) + ")";
}

int32_t to_dtype(nvinfer1::DataType t) {
    switch (t) {
    case nvinfer1::DataType::kFLOAT: return TRT_DTYPE_FLOAT32;
    case nvinfer1::DataType::kHALF: return TRT_DTYPE_FLOAT16;
    case nvinfer1::DataType::kBF16: return TRT_DTYPE_BFLOAT16;
    case nvinfer1::DataType::kINT8: return TRT_DTYPE_INT8;
    case nvinfer1::DataType::kUINT8: return TRT_DTYPE_UINT8;
    case nvinfer1::DataType::kINT32: return TRT_DTYPE_INT32;
    case nvinfer1::DataType::kINT64: return TRT_DTYPE_INT64;
    case nvinfer1::DataType::kBOOL: return TRT_DTYPE_BOOL;
    case nvinfer1::DataType::kFP8: return TRT_DTYPE_FP8;
    default: return TRT_DTYPE_UNKNOWN;  // e.g. packed 4-bit types
    }
}

// Bytes per element, or 0 for types we cannot size (sub-byte packing).
size_t dtype_size(int32_t dtype) {
    switch (dtype) {
    case TRT_DTYPE_FLOAT32: case TRT_DTYPE_INT32: return 4;
    case TRT_DTYPE_INT64: return 8;
    case TRT_DTYPE_FLOAT16: case TRT_DTYPE_BFLOAT16: return 2;
    case TRT_DTYPE_INT8: case TRT_DTYPE_UINT8: case TRT_DTYPE_BOOL: case TRT_DTYPE_FP8: return 1;
    default: return 0;
    }
}

std::string dims_string(const nvinfer1::Dims &d) {
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (i > 0) {
            s += ", ";
        }
        s += std::to_string(d.d[i]);
    }
    return s + "]";
}

// Element count of a fully known shape; false if a dim is unknown or the
// product overflows.
bool volume(const nvinfer1::Dims &d, size_t *out) {
    if (d.nbDims < 0 || d.nbDims > nvinfer1::Dims::MAX_DIMS) {
        return false;
    }
    size_t n = 1;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) {
            return false;
        }
        size_t dim = static_cast<size_t>(d.d[i]);
        if (dim != 0 && n > SIZE_MAX / dim) {
            return false;
        }
        n *= dim;
    }
    *out = n;
    return true;
}

bool checked_bytes(size_t elements, size_t elem_size, size_t *out) {
    if (elem_size != 0 && elements > SIZE_MAX / elem_size) {
        return false;
    }
    *out = elements * elem_size;
    return true;
}

struct DeviceBuffer {
    void *ptr = nullptr;
    size_t capacity = 0;
};

}  // namespace

struct trt_engine {
    // Declared before `engine` so it is destroyed after it.
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    int device = 0;
};

struct trt_context {
    trt_engine *owner = nullptr;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream = nullptr;
    // Device memory per I/O tensor, grown on demand and reused across runs
    // so steady-state inference does no cudaMalloc.
    std::unordered_map<std::string, DeviceBuffer> buffers;

    ~trt_context() {
        if (owner != nullptr) {
            cudaSetDevice(owner->device);
        }
        if (stream != nullptr) {
            cudaStreamSynchronize(stream);
        }
        context.reset();
        for (auto &entry : buffers) {
            cudaFree(entry.second.ptr);
        }
        if (stream != nullptr) {
            cudaStreamDestroy(stream);
        }
    }
};

namespace {

// Index of I/O tensor `name`, or -1.
int32_t find_io(const nvinfer1::ICudaEngine &engine, const char *name) {
    int32_t n = engine.getNbIOTensors();
    for (int32_t i = 0; i < n; ++i) {
        if (std::strcmp(engine.getIOTensorName(i), name) == 0) {
            return i;
        }
    }
    return -1;
}

// The device buffer for `name`, at least `bytes` long (never zero, so every
// tensor gets a valid address even when it is empty).
cudaError_t reserve(trt_context *ctx, const std::string &name, size_t bytes, void **out) {
    DeviceBuffer &buf = ctx->buffers[name];
    if (bytes == 0) {
        bytes = 1;
    }
    if (buf.capacity < bytes) {
        // The previous run was synchronised before it returned, so the old
        // buffer is idle and can be freed right away.
        cudaFree(buf.ptr);
        buf.ptr = nullptr;
        buf.capacity = 0;
        cudaError_t rc = cudaMalloc(&buf.ptr, bytes);
        if (rc != cudaSuccess) {
            buf.ptr = nullptr;
            return rc;
        }
        buf.capacity = bytes;
    }
    *out = buf.ptr;
    return cudaSuccess;
}

std::string profile_range(const nvinfer1::ICudaEngine &engine, const char *name) {
    nvinfer1::Dims lo = engine.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN);
    nvinfer1::Dims hi = engine.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
    return " (profile 0 allows " + dims_string(lo) + " to " + dims_string(hi) + ")";
}

int32_t run(trt_context *ctx, const trt_input *inputs, size_t n_inputs, trt_output *outputs,
            size_t n_outputs, char *err, size_t err_len) {
    const nvinfer1::ICudaEngine &engine = *ctx->owner->engine;
    nvinfer1::IExecutionContext &exec = *ctx->context;

    cudaError_t rc = cudaSetDevice(ctx->owner->device);
    if (rc != cudaSuccess) {
        return fail(err, err_len, TRT_E_CUDA, cuda_reason("cudaSetDevice", rc));
    }

    // Check everything we can before touching the GPU.
    for (size_t i = 0; i < n_inputs; ++i) {
        const trt_input &in = inputs[i];
        if (in.name == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input without a name");
        }
        std::string name = in.name;
        for (size_t j = 0; j < i; ++j) {
            if (std::strcmp(inputs[j].name, in.name) == 0) {
                return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input '" + name + "' given twice");
            }
        }
        if (find_io(engine, in.name) < 0) {
            return fail(err, err_len, TRT_E_NOT_FOUND, "engine has no tensor '" + name + "'");
        }
        if (engine.getTensorIOMode(in.name) != nvinfer1::TensorIOMode::kINPUT) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "'" + name + "' is not an input");
        }
        if (to_dtype(engine.getTensorDataType(in.name)) != in.dtype) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input '" + name + "' has the wrong dtype");
        }
        nvinfer1::Dims want = engine.getTensorShape(in.name);
        if (in.rank != want.nbDims) {
            return fail(err, err_len, TRT_E_SHAPE,
                        "input '" + name + "' has rank " + std::to_string(in.rank) + ", engine expects " +
                            dims_string(want));
        }
        nvinfer1::Dims dims{};
        dims.nbDims = in.rank;
        for (int32_t d = 0; d < in.rank; ++d) {
            dims.d[d] = in.dims[d];
        }
        size_t elements = 0;
        size_t bytes = 0;
        if (!volume(dims, &elements) || !checked_bytes(elements, dtype_size(in.dtype), &bytes) ||
            bytes != in.bytes || (bytes > 0 && in.data == nullptr)) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT,
                        "input '" + name + "' buffer does not match its shape " + dims_string(dims));
        }
    }
    for (int32_t t = 0; t < engine.getNbIOTensors(); ++t) {
        const char *name = engine.getIOTensorName(t);
        if (engine.getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) {
            continue;
        }
        bool given = false;
        for (size_t i = 0; i < n_inputs && !given; ++i) {
            given = std::strcmp(inputs[i].name, name) == 0;
        }
        if (!given) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT,
                        std::string("engine input '") + name + "' was not given");
        }
    }
    for (size_t o = 0; o < n_outputs; ++o) {
        const trt_output &out = outputs[o];
        if (out.name == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "output without a name");
        }
        std::string name = out.name;
        if (find_io(engine, out.name) < 0) {
            return fail(err, err_len, TRT_E_NOT_FOUND, "engine has no tensor '" + name + "'");
        }
        if (engine.getTensorIOMode(out.name) != nvinfer1::TensorIOMode::kOUTPUT) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "'" + name + "' is not an output");
        }
        if (to_dtype(engine.getTensorDataType(out.name)) != out.dtype) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "output '" + name + "' has the wrong dtype");
        }
        if (out.capacity > 0 && out.data == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "output '" + name + "' has no buffer");
        }
    }

    // Shapes: TensorRT checks them against the optimisation profile.
    for (size_t i = 0; i < n_inputs; ++i) {
        nvinfer1::Dims dims{};
        dims.nbDims = inputs[i].rank;
        for (int32_t d = 0; d < inputs[i].rank; ++d) {
            dims.d[d] = inputs[i].dims[d];
        }
        if (!exec.setInputShape(inputs[i].name, dims)) {
            return fail(err, err_len, TRT_E_SHAPE,
                        with_trt_reason(std::string("input '") + inputs[i].name + "' shape " + dims_string(dims) +
                                        " rejected" + profile_range(engine, inputs[i].name)));
        }
    }
    if (exec.inferShapes(0, nullptr) != 0) {
        return fail(err, err_len, TRT_E_SHAPE, with_trt_reason("shape inference failed"));
    }

    // Device buffers for every I/O tensor: TensorRT needs an address for
    // outputs we do not read too.
    std::vector<void *> input_dev(n_inputs, nullptr);
    std::vector<void *> output_dev(n_outputs, nullptr);
    for (int32_t t = 0; t < engine.getNbIOTensors(); ++t) {
        const char *name = engine.getIOTensorName(t);
        nvinfer1::Dims shape = exec.getTensorShape(name);
        size_t elements = 0;
        size_t bytes = 0;
        // Assumes linear (non-vectorised) I/O formats, trtexec's default.
        size_t elem = dtype_size(to_dtype(engine.getTensorDataType(name)));
        if (elem == 0) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT,
                        std::string("tensor '") + name + "' has a dtype this shim cannot size");
        }
        if (!volume(shape, &elements) || !checked_bytes(elements, elem, &bytes)) {
            return fail(err, err_len, TRT_E_SHAPE,
                        std::string("tensor '") + name + "' has no fixed shape " + dims_string(shape) +
                            " (data-dependent outputs are not supported)");
        }
        void *dev = nullptr;
        rc = reserve(ctx, name, bytes, &dev);
        if (rc != cudaSuccess) {
            return fail(err, err_len, TRT_E_CUDA,
                        cuda_reason(std::string("cudaMalloc for '") + name + "' (" + std::to_string(bytes) +
                                        " bytes)",
                                    rc));
        }
        if (!exec.setTensorAddress(name, dev)) {
            return fail(err, err_len, TRT_E_TENSORRT,
                        with_trt_reason(std::string("setTensorAddress '") + name + "' failed"));
        }
        for (size_t i = 0; i < n_inputs; ++i) {
            if (std::strcmp(inputs[i].name, name) == 0) {
                input_dev[i] = dev;
            }
        }
        for (size_t o = 0; o < n_outputs; ++o) {
            trt_output &out = outputs[o];
            if (std::strcmp(out.name, name) != 0) {
                continue;
            }
            out.rank = shape.nbDims;
            for (int32_t d = 0; d < TRT_MAX_DIMS; ++d) {
                out.dims[d] = d < shape.nbDims ? shape.d[d] : 0;
            }
            out.bytes = bytes;
            if (bytes > out.capacity) {
                return fail(err, err_len, TRT_E_SHAPE,
                            "output '" + std::string(name) + "' " + dims_string(shape) + " needs " +
                                std::to_string(bytes) + " bytes, buffer has " + std::to_string(out.capacity));
            }
            output_dev[o] = dev;
        }
    }

    // From here work is queued on the stream: every exit waits for it, so
    // no copy into or out of the caller's memory outlives this call.
    auto fail_after_sync = [&](int32_t status, const std::string &msg) {
        cudaStreamSynchronize(ctx->stream);
        return fail(err, err_len, status, msg);
    };
    for (size_t i = 0; i < n_inputs; ++i) {
        if (inputs[i].bytes == 0) {
            continue;
        }
        rc = cudaMemcpyAsync(input_dev[i], inputs[i].data, inputs[i].bytes, cudaMemcpyHostToDevice, ctx->stream);
        if (rc != cudaSuccess) {
            return fail_after_sync(TRT_E_CUDA,
                                   cuda_reason(std::string("copying input '") + inputs[i].name + "'", rc));
        }
    }
    if (!exec.enqueueV3(ctx->stream)) {
        return fail_after_sync(TRT_E_TENSORRT, with_trt_reason("enqueueV3 failed"));
    }
    for (size_t o = 0; o < n_outputs; ++o) {
        if (outputs[o].bytes == 0) {
            continue;
        }
        rc = cudaMemcpyAsync(outputs[o].data, output_dev[o], outputs[o].bytes, cudaMemcpyDeviceToHost, ctx->stream);
        if (rc != cudaSuccess) {
            return fail_after_sync(TRT_E_CUDA,
                                   cuda_reason(std::string("copying output '") + outputs[o].name + "'", rc));
        }
    }
    rc = cudaStreamSynchronize(ctx->stream);
    if (rc != cudaSuccess) {
        return fail(err, err_len, TRT_E_CUDA, cuda_reason("inference failed on the GPU", rc));
    }
    return TRT_OK;
}

}  // namespace

// Turns any C++ exception into a status: none may unwind into Rust.
#define SHIM_GUARD(body)                                                                   \
    try {                                                                                  \
        body                                                                               \
    } catch (const std::bad_alloc &) {                                                     \
        return fail(err, err_len, TRT_E_INTERNAL, "out of host memory");                   \
    } catch (const std::exception &e) {                                                    \
        return fail(err, err_len, TRT_E_INTERNAL, std::string("C++ exception: ") + e.what()); \
    } catch (...) {                                                                        \
        return fail(err, err_len, TRT_E_INTERNAL, "unknown C++ exception");                \
    }

extern "C" {

int32_t trt_engine_load(const char *path, trt_engine **out, char *err, size_t err_len) {
    SHIM_GUARD({
        t_last_error.clear();
        if (path == nullptr || out == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "path and out must not be NULL");
        }
        *out = nullptr;

        std::ifstream file(path, std::ios::binary);
        if (!file) {
            return fail(err, err_len, TRT_E_IO,
                        std::string("cannot open plan file '") + path + "': " + std::strerror(errno));
        }
        std::vector<char> blob((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        if (file.bad()) {
            return fail(err, err_len, TRT_E_IO, std::string("cannot read plan file '") + path + "'");
        }
        if (blob.empty()) {
            return fail(err, err_len, TRT_E_IO, std::string("plan file '") + path + "' is empty");
        }

        // cudaFree(nullptr) creates the CUDA context, so "no GPU" or a
        // driver mismatch is reported here as such, not as a bad plan.
        auto engine = std::make_unique<trt_engine>();
        cudaError_t rc = cudaGetDevice(&engine->device);
        if (rc == cudaSuccess) {
            rc = cudaFree(nullptr);
        }
        if (rc != cudaSuccess) {
            return fail(err, err_len, TRT_E_CUDA, cuda_reason("no usable CUDA device", rc));
        }

        engine->runtime.reset(nvinfer1::createInferRuntime(logger()));
        if (!engine->runtime) {
            return fail(err, err_len, TRT_E_TENSORRT, with_trt_reason("createInferRuntime failed"));
        }
        engine->engine.reset(engine->runtime->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine->engine) {
            return fail(err, err_len, TRT_E_TENSORRT,
                        with_trt_reason("cannot deserialise the plan (was it built by this TensorRT version, "
                                        "for this GPU?)"));
        }
        *out = engine.release();
        return TRT_OK;
    })
}

void trt_engine_free(trt_engine *engine) {
    try {
        if (engine != nullptr) {
            cudaSetDevice(engine->device);
        }
        delete engine;
    } catch (...) {
        // Destructors here do not throw; nothing more to do.
    }
}

int32_t trt_engine_io_count(const trt_engine *engine) {
    if (engine == nullptr) {
        return -1;
    }
    return engine->engine->getNbIOTensors();
}

const char *trt_engine_io_name(const trt_engine *engine, int32_t index) {
    if (engine == nullptr || index < 0 || index >= engine->engine->getNbIOTensors()) {
        return nullptr;
    }
    return engine->engine->getIOTensorName(index);
}

int32_t trt_tensor_info_get(const trt_engine *engine, const char *name, trt_tensor_info *out, char *err,
                            size_t err_len) {
    SHIM_GUARD({
        if (engine == nullptr || name == nullptr || out == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine, name and out must not be NULL");
        }
        const nvinfer1::ICudaEngine &e = *engine->engine;
        // Look the name up ourselves: asking TensorRT about an unknown name
        // logs an error, and a missing optional input is not one.
        if (find_io(e, name) < 0) {
            return fail(err, err_len, TRT_E_NOT_FOUND, std::string("engine has no tensor '") + name + "'");
        }
        nvinfer1::Dims shape = e.getTensorShape(name);
        if (shape.nbDims < 0 || shape.nbDims > TRT_MAX_DIMS) {
            return fail(err, err_len, TRT_E_TENSORRT, std::string("tensor '") + name + "' has no valid shape");
        }
        out->dtype = to_dtype(e.getTensorDataType(name));
        out->is_input = e.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
        out->rank = shape.nbDims;
        for (int32_t d = 0; d < TRT_MAX_DIMS; ++d) {
            out->dims[d] = d < shape.nbDims ? shape.d[d] : 0;
        }
        return TRT_OK;
    })
}

int32_t trt_context_create(trt_engine *engine, trt_context **out, char *err, size_t err_len) {
    SHIM_GUARD({
        t_last_error.clear();
        if (engine == nullptr || out == nullptr) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine and out must not be NULL");
        }
        *out = nullptr;
        cudaError_t rc = cudaSetDevice(engine->device);
        if (rc != cudaSuccess) {
            return fail(err, err_len, TRT_E_CUDA, cuda_reason("cudaSetDevice", rc));
        }
        auto ctx = std::make_unique<trt_context>();
        ctx->owner = engine;
        // A non-blocking stream of our own: enqueueV3 on the legacy default
        // stream would add device-wide synchronisation.
        rc = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking);
        if (rc != cudaSuccess) {
            ctx->stream = nullptr;
            return fail(err, err_len, TRT_E_CUDA, cuda_reason("cudaStreamCreate", rc));
        }
        // Static allocation: the context reserves activation memory for the
        // largest profile shape once, so a run never allocates it.
        ctx->context.reset(engine->engine->createExecutionContext());
        if (!ctx->context) {
            return fail(err, err_len, TRT_E_TENSORRT,
                        with_trt_reason("createExecutionContext failed (out of device memory?)"));
        }
        *out = ctx.release();
        return TRT_OK;
    })
}

void trt_context_free(trt_context *context) {
    try {
        delete context;
    } catch (...) {
        // Destructors here do not throw; nothing more to do.
    }
}

int32_t trt_run(trt_context *context, const trt_input *inputs, size_t n_inputs, trt_output *outputs,
                size_t n_outputs, char *err, size_t err_len) {
    SHIM_GUARD({
        t_last_error.clear();
        if (context == nullptr || (n_inputs > 0 && inputs == nullptr) || (n_outputs > 0 && outputs == nullptr)) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "context and non-empty arrays must not be NULL");
        }
        return run(context, inputs, n_inputs, outputs, n_outputs, err, err_len);
    })
}

}  // extern "C"
