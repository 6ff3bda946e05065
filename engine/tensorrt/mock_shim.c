/*
 * A CPU stand-in for shim.cpp, built only with IGW_TENSORRT_MOCK=1 on hosts
 * without TensorRT. It implements shim.h exactly (same statuses, same
 * checks on names, dtypes and shapes) so the Rust wrapper and its error
 * paths are tested end to end; it is never a model.
 *
 * Its "plan" is a text file:
 *
 *   igw-trt-mock-plan 1
 *   dim 8                                  # width of the output vectors
 *   seed 42                                # mixed into every value
 *   input input_ids int64                  # [-1, -1], int64 or int32
 *   input attention_mask int64
 *   input token_type_ids int32             # optional
 *   output last_hidden_state float32       # [-1, -1, dim]
 *   max_batch 16                           # optional profile limits
 *   max_seq 128
 *
 * `input_ids` must be declared. For row b, position s and channel j:
 *
 *   k = id*131 + s*31 + j*7 + token_type*17 + seed    (wrapping, as uint64)
 *   value = (float)(k % 1009) / 1009.0f - 0.5f,  or 0 where the mask is 0
 *
 * with token_type 0 and mask 1 when those inputs are not declared.
 */
/* For strtok_r: plans may be loaded on several threads at once. */
#define _POSIX_C_SOURCE 200809L

#include "shim.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOCK_MAGIC "igw-trt-mock-plan 1"
#define MOCK_MAX_TENSORS 8
#define MOCK_NAME_LEN 64

typedef struct {
    char name[MOCK_NAME_LEN];
    int32_t dtype;
    int32_t is_input;
} mock_tensor;

struct trt_engine {
    int64_t dim;
    uint64_t seed;
    int64_t max_batch; /* 0: no limit */
    int64_t max_seq;
    int32_t n_tensors;
    mock_tensor tensors[MOCK_MAX_TENSORS];
};

struct trt_context {
    const trt_engine *engine;
};

static int32_t fail(char *err, size_t err_len, int32_t status, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, err_len, fmt, args);
        va_end(args);
    }
    return status;
}

static int32_t parse_dtype(const char *s) {
    if (strcmp(s, "float32") == 0) return TRT_DTYPE_FLOAT32;
    if (strcmp(s, "int32") == 0) return TRT_DTYPE_INT32;
    if (strcmp(s, "int64") == 0) return TRT_DTYPE_INT64;
    return TRT_DTYPE_UNKNOWN;
}

static size_t dtype_size(int32_t dtype) {
    switch (dtype) {
    case TRT_DTYPE_FLOAT32: case TRT_DTYPE_INT32: return 4;
    case TRT_DTYPE_INT64: return 8;
    default: return 0;
    }
}

static int32_t find_tensor(const trt_engine *e, const char *name) {
    for (int32_t i = 0; i < e->n_tensors; ++i) {
        if (strcmp(e->tensors[i].name, name) == 0) return i;
    }
    return -1;
}

/* A positive integer in [1, max]; 0 if the text is not one. */
static int64_t parse_positive(const char *s, int64_t max) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > max) return 0;
    return (int64_t)v;
}

int32_t trt_engine_load(const char *path, trt_engine **out, char *err, size_t err_len) {
    if (path == NULL || out == NULL) {
        return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "path and out must not be NULL");
    }
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return fail(err, err_len, TRT_E_IO, "cannot open plan file '%s': %s", path, strerror(errno));
    }
    trt_engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        fclose(f);
        return fail(err, err_len, TRT_E_INTERNAL, "out of host memory");
    }

    char line[256];
    int lineno = 0;
    int32_t status = TRT_OK;
    int have_seed = 0;
    int have_magic = 0;
    while (status == TRT_OK && fgets(line, sizeof line, f) != NULL) {
        ++lineno;
        size_t len = strlen(line);
        if (len + 1 == sizeof line && line[len - 1] != '\n') {
            status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: line too long", path, lineno);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL) *hash = '\0';
        char *words[4] = {0};
        int n = 0;
        char *save = NULL;
        for (char *w = strtok_r(line, " \t\r\n", &save); w != NULL; w = strtok_r(NULL, " \t\r\n", &save)) {
            if (n == 4) {
                n = 5;
                break;
            }
            words[n++] = w;
        }
        if (n == 0) continue;
        if (!have_magic) {
            if (n != 2 || strcmp(words[0], "igw-trt-mock-plan") != 0 || strcmp(words[1], "1") != 0) {
                status = fail(err, err_len, TRT_E_TENSORRT,
                              "'%s' is not a mock TensorRT plan (first line must be '" MOCK_MAGIC "')", path);
            }
            have_magic = 1;
            continue;
        }
        if (n == 2 && strcmp(words[0], "dim") == 0) {
            e->dim = parse_positive(words[1], 1 << 20);
            if (e->dim == 0) status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: bad dim", path, lineno);
        } else if (n == 2 && strcmp(words[0], "seed") == 0) {
            char *end = NULL;
            errno = 0;
            e->seed = strtoull(words[1], &end, 10);
            have_seed = 1;
            if (errno != 0 || *end != '\0') {
                status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: bad seed", path, lineno);
            }
        } else if (n == 2 && strcmp(words[0], "max_batch") == 0) {
            e->max_batch = parse_positive(words[1], INT32_MAX);
            if (e->max_batch == 0) status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: bad max_batch", path, lineno);
        } else if (n == 2 && strcmp(words[0], "max_seq") == 0) {
            e->max_seq = parse_positive(words[1], INT32_MAX);
            if (e->max_seq == 0) status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: bad max_seq", path, lineno);
        } else if (n == 3 && (strcmp(words[0], "input") == 0 || strcmp(words[0], "output") == 0)) {
            int32_t dtype = parse_dtype(words[2]);
            if (e->n_tensors == MOCK_MAX_TENSORS || strlen(words[1]) >= MOCK_NAME_LEN ||
                find_tensor(e, words[1]) >= 0 || dtype == TRT_DTYPE_UNKNOWN) {
                status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: bad or duplicate tensor '%s'", path, lineno,
                              words[1]);
            } else {
                mock_tensor *t = &e->tensors[e->n_tensors++];
                strcpy(t->name, words[1]);
                t->dtype = dtype;
                t->is_input = words[0][0] == 'i';
            }
        } else {
            status = fail(err, err_len, TRT_E_TENSORRT, "%s:%d: unknown line", path, lineno);
        }
    }
    if (status == TRT_OK && ferror(f)) {
        status = fail(err, err_len, TRT_E_IO, "cannot read plan file '%s'", path);
    }
    fclose(f);
    if (status == TRT_OK && !have_magic) {
        status = lineno == 0 ? fail(err, err_len, TRT_E_IO, "plan file '%s' is empty", path)
                             : fail(err, err_len, TRT_E_TENSORRT, "'%s' is not a mock TensorRT plan", path);
    }
    if (status == TRT_OK && (e->dim == 0 || !have_seed)) {
        status = fail(err, err_len, TRT_E_TENSORRT, "'%s': mock plan needs 'dim' and 'seed'", path);
    }
    if (status == TRT_OK) {
        int32_t ids = find_tensor(e, "input_ids");
        if (ids < 0 || !e->tensors[ids].is_input || e->tensors[ids].dtype == TRT_DTYPE_FLOAT32) {
            status = fail(err, err_len, TRT_E_TENSORRT, "'%s': mock plan needs an integer input 'input_ids'", path);
        }
    }
    if (status != TRT_OK) {
        free(e);
        return status;
    }
    *out = e;
    return TRT_OK;
}

void trt_engine_free(trt_engine *engine) { free(engine); }

int32_t trt_engine_io_count(const trt_engine *engine) { return engine == NULL ? -1 : engine->n_tensors; }

const char *trt_engine_io_name(const trt_engine *engine, int32_t index) {
    if (engine == NULL || index < 0 || index >= engine->n_tensors) return NULL;
    return engine->tensors[index].name;
}

int32_t trt_tensor_info_get(const trt_engine *engine, const char *name, trt_tensor_info *out, char *err,
                            size_t err_len) {
    if (engine == NULL || name == NULL || out == NULL) {
        return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine, name and out must not be NULL");
    }
    int32_t i = find_tensor(engine, name);
    if (i < 0) return fail(err, err_len, TRT_E_NOT_FOUND, "engine has no tensor '%s'", name);
    memset(out, 0, sizeof *out);
    out->dtype = engine->tensors[i].dtype;
    out->is_input = engine->tensors[i].is_input;
    out->dims[0] = -1;
    out->dims[1] = -1;
    out->rank = 2;
    if (!out->is_input) {
        out->dims[2] = engine->dim;
        out->rank = 3;
    }
    return TRT_OK;
}

int32_t trt_context_create(trt_engine *engine, trt_context **out, char *err, size_t err_len) {
    if (engine == NULL || out == NULL) {
        return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine and out must not be NULL");
    }
    *out = calloc(1, sizeof **out);
    if (*out == NULL) return fail(err, err_len, TRT_E_INTERNAL, "out of host memory");
    (*out)->engine = engine;
    return TRT_OK;
}

void trt_context_free(trt_context *context) { free(context); }

static int64_t read_int(const void *data, int32_t dtype, size_t i) {
    if (dtype == TRT_DTYPE_INT32) return ((const int32_t *)data)[i];
    return ((const int64_t *)data)[i];
}

int32_t trt_run(trt_context *context, const trt_input *inputs, size_t n_inputs, trt_output *outputs,
                size_t n_outputs, char *err, size_t err_len) {
    if (context == NULL || (n_inputs > 0 && inputs == NULL) || (n_outputs > 0 && outputs == NULL)) {
        return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "context and non-empty arrays must not be NULL");
    }
    const trt_engine *e = context->engine;
    const trt_input *ids = NULL, *mask = NULL, *types = NULL;
    int64_t batch = -1, seq = -1;

    for (size_t i = 0; i < n_inputs; ++i) {
        const trt_input *in = &inputs[i];
        if (in->name == NULL) return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input without a name");
        for (size_t j = 0; j < i; ++j) {
            if (strcmp(inputs[j].name, in->name) == 0) {
                return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input '%s' given twice", in->name);
            }
        }
        int32_t t = find_tensor(e, in->name);
        if (t < 0) return fail(err, err_len, TRT_E_NOT_FOUND, "engine has no tensor '%s'", in->name);
        if (!e->tensors[t].is_input) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "'%s' is not an input", in->name);
        }
        if (e->tensors[t].dtype != in->dtype) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input '%s' has the wrong dtype", in->name);
        }
        if (in->rank != 2 || in->dims[0] < 0 || in->dims[1] < 0) {
            return fail(err, err_len, TRT_E_SHAPE, "input '%s' must be [batch, seq]", in->name);
        }
        if (batch >= 0 && (in->dims[0] != batch || in->dims[1] != seq)) {
            return fail(err, err_len, TRT_E_SHAPE, "input '%s' shape differs from the others", in->name);
        }
        batch = in->dims[0];
        seq = in->dims[1];
        if ((e->max_batch > 0 && batch > e->max_batch) || (e->max_seq > 0 && seq > e->max_seq)) {
            return fail(err, err_len, TRT_E_SHAPE,
                        "input '%s' shape [%lld, %lld] rejected (profile 0 allows [1, 1] to [%lld, %lld])",
                        in->name, (long long)batch, (long long)seq, (long long)e->max_batch,
                        (long long)e->max_seq);
        }
        /* The shape fits an int32 profile here, so the product cannot overflow. */
        if (in->bytes != (size_t)batch * (size_t)seq * dtype_size(in->dtype) ||
            (in->bytes > 0 && in->data == NULL)) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "input '%s' buffer does not match its shape",
                        in->name);
        }
        if (strcmp(in->name, "input_ids") == 0) ids = in;
        if (strcmp(in->name, "attention_mask") == 0) mask = in;
        if (strcmp(in->name, "token_type_ids") == 0) types = in;
    }
    for (int32_t t = 0; t < e->n_tensors; ++t) {
        int given = 0;
        for (size_t i = 0; i < n_inputs && !given; ++i) given = strcmp(inputs[i].name, e->tensors[t].name) == 0;
        if (e->tensors[t].is_input && !given) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine input '%s' was not given",
                        e->tensors[t].name);
        }
    }
    if (ids == NULL) return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "engine input 'input_ids' was not given");

    size_t tokens = (size_t)batch * (size_t)seq;
    size_t dim = (size_t)e->dim;
    for (size_t o = 0; o < n_outputs; ++o) {
        trt_output *out = &outputs[o];
        if (out->name == NULL) return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "output without a name");
        int32_t t = find_tensor(e, out->name);
        if (t < 0) return fail(err, err_len, TRT_E_NOT_FOUND, "engine has no tensor '%s'", out->name);
        if (e->tensors[t].is_input) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "'%s' is not an output", out->name);
        }
        if (e->tensors[t].dtype != out->dtype || out->dtype != TRT_DTYPE_FLOAT32) {
            return fail(err, err_len, TRT_E_INVALID_ARGUMENT, "output '%s' has the wrong dtype", out->name);
        }
        memset(out->dims, 0, sizeof out->dims);
        out->rank = 3;
        out->dims[0] = batch;
        out->dims[1] = seq;
        out->dims[2] = e->dim;
        if (dim != 0 && tokens > SIZE_MAX / sizeof(float) / dim) {
            return fail(err, err_len, TRT_E_SHAPE, "output '%s' is too large", out->name);
        }
        out->bytes = tokens * dim * sizeof(float);
        if (out->bytes > out->capacity || (out->bytes > 0 && out->data == NULL)) {
            return fail(err, err_len, TRT_E_SHAPE, "output '%s' [%lld, %lld, %lld] needs %zu bytes, buffer has %zu",
                        out->name, (long long)batch, (long long)seq, (long long)e->dim, out->bytes,
                        out->capacity);
        }
    }

    for (size_t o = 0; o < n_outputs; ++o) {
        float *values = outputs[o].data;
        for (size_t i = 0; i < tokens; ++i) {
            uint64_t id = (uint64_t)read_int(ids->data, ids->dtype, i);
            uint64_t tt = types != NULL ? (uint64_t)read_int(types->data, types->dtype, i) : 0;
            int64_t m = mask != NULL ? read_int(mask->data, mask->dtype, i) : 1;
            uint64_t pos = (uint64_t)(i % (size_t)seq);
            for (size_t j = 0; j < dim; ++j) {
                uint64_t k = id * 131u + pos * 31u + (uint64_t)j * 7u + tt * 17u + e->seed;
                values[i * dim + j] = m == 0 ? 0.0f : (float)(k % 1009u) / 1009.0f - 0.5f;
            }
        }
    }
    return TRT_OK;
}
