/* The semantic classifier's numeric steps, each in one native pass: the static embedding of a prompt
 * (from its token ids, or straight from its text over the tokenizer's cache), the softmax vote of every
 * labelled example, and the token estimate's counts. classify/semantic.py, classify/embeddings.py and
 * request.py fall back to numpy and Python when this optional extension was not built (no C compiler at
 * install time).
 *
 * Arrays arrive through the buffer protocol (C-contiguous numpy arrays), so no numpy headers are
 * needed to build. On x86-64 Linux with GCC 11+ the loops are also compiled for x86-64-v3 (AVX2,
 * FMA) and the loader picks that version on CPUs that have it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define LANES 8
#define MAX_COLS 64
#define MAX_DIM 4096
#define MAX_TOKENS 4096 /* embed_text's bound on the ids of one text */

/* e^x for x <= 0 (the vote only takes differences to the largest similarity): Cody-Waite range
 * reduction and Cephes' degree-6 polynomial, within 2 ulp of expf. Inputs below -87 give e^-87
 * (~1.6e-38). The softmax runs it eight lanes at a time (exp8_nonpositive, the same steps). */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float n = (float)(int32_t)(x * 1.44269504089f - 0.5f); /* nearest integer (x <= 0) */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t i; float f; } scale;
    scale.i = (uint32_t)((int32_t)n + 127) << 23;
    return p * scale.f;
}

/* Whether a function got `want` arguments (else a TypeError that says how many it takes). */
static int arg_count(const char *function, Py_ssize_t want, Py_ssize_t got) {
    if (got == want) return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, want, got);
    return 0;
}

/* Takes a buffer of each object in turn; on failure releases those already taken and returns 0. */
static int get_buffers(PyObject *const *objs, const char *const *names, unsigned writable, int count, Py_buffer *views) {
    for (int i = 0; i < count; i++) {
        const int w = (writable >> i) & 1;
        if (PyObject_GetBuffer(objs[i], &views[i], PyBUF_C_CONTIGUOUS | (w ? PyBUF_WRITABLE : 0)) < 0) {
            PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s array", names[i], w ? " writable" : "");
            for (int j = 0; j < i; j++) PyBuffer_Release(&views[j]);
            return 0;
        }
    }
    return 1;
}

static void release(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++) PyBuffer_Release(&views[i]);
}

static int check_len(const Py_buffer *view, Py_ssize_t want, const char *what) {
    if (view->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, want, view->len);
        return 0;
    }
    return 1;
}

/* The embedding's sizes, checked: the vocabulary (scale's length) and the width (out's), with table vocab x width. */
static int embedding_sizes(const Py_buffer *table, const Py_buffer *scale, const Py_buffer *out, Py_ssize_t *vocab,
                           Py_ssize_t *dim) {
    *vocab = scale->len / 4;
    *dim = out->len / 4;
    if (*dim <= 0 || *dim > MAX_DIM) {
        PyErr_Format(PyExc_ValueError, "out: dimension %zd outside 1..%d", *dim, MAX_DIM);
        return 0;
    }
    return check_len(table, *vocab * *dim, "table");
}

/* Whether every id is a row of the table (else an IndexError naming the first that is not). */
static int ids_in_vocabulary(const int32_t *ids, Py_ssize_t n, Py_ssize_t vocab) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            PyErr_Format(PyExc_IndexError, "token id %d outside the vocabulary of %zd", ids[i], vocab);
            return 0;
        }
    return 1;
}

/* out += sum of scale[id] * table[id] over the ids, in order (embed and embed_text add the same way). */
CLONES static void add_rows(const int32_t *ids, Py_ssize_t n, const int8_t *table, const float *scale, Py_ssize_t dim,
                            float *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const int8_t *row = table + (Py_ssize_t)ids[i] * dim;
        const float w = scale[ids[i]];
        if (i + 4 < n) /* the rows are scattered over the table: ask for a later one while this one is summed */
            for (Py_ssize_t j = 0; j < dim; j += 64) __builtin_prefetch(table + (Py_ssize_t)ids[i + 4] * dim + j);
        for (Py_ssize_t j = 0; j < dim; j++) out[j] += w * (float)row[j];
    }
}

CLONES static float dot(const float *a, const float *b, Py_ssize_t n) {
    float lane[LANES] = {0};
    Py_ssize_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) lane[l] += a[j + l] * b[j + l];
    float acc = 0.0f;
    for (; j < n; j++) acc += a[j] * b[j];
    for (int l = 0; l < LANES; l++) acc += lane[l];
    return acc;
}

#if defined(__GNUC__)
typedef float vec8 __attribute__((vector_size(32)));

static inline vec8 load8(const float *p) {
    vec8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float sum8(vec8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* s[k] = matrix[k] . x - vec_mean[k] for k < n. Four rows at a time: four independent sums keep the
 * multiply-add units busy where one row's sum would wait on its own previous step. */
CLONES static void similarities(const float *matrix, const float *x, Py_ssize_t n, Py_ssize_t dim, const float *vec_mean,
                                float *s) {
    const Py_ssize_t body = dim - dim % 8;
    Py_ssize_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const float *r0 = matrix + k * dim, *r1 = r0 + dim, *r2 = r1 + dim, *r3 = r2 + dim;
        vec8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (Py_ssize_t j = 0; j < body; j += 8) {
            const vec8 xv = load8(x + j);
            a0 += load8(r0 + j) * xv;
            a1 += load8(r1 + j) * xv;
            a2 += load8(r2 + j) * xv;
            a3 += load8(r3 + j) * xv;
        }
        float t0 = sum8(a0), t1 = sum8(a1), t2 = sum8(a2), t3 = sum8(a3);
        for (Py_ssize_t j = body; j < dim; j++) {
            t0 += r0[j] * x[j];
            t1 += r1[j] * x[j];
            t2 += r2[j] * x[j];
            t3 += r3[j] * x[j];
        }
        s[k] = t0 - vec_mean[k];
        s[k + 1] = t1 - vec_mean[k + 1];
        s[k + 2] = t2 - vec_mean[k + 2];
        s[k + 3] = t3 - vec_mean[k + 3];
    }
    for (; k < n; k++) s[k] = dot(matrix + k * dim, x, dim) - vec_mean[k];
}

typedef int32_t ivec8 __attribute__((vector_size(32)));

/* exp_nonpositive on eight lanes, step for step (GCC does not vectorise the scalar one: it turns the clamp
 * into a branch). */
static inline vec8 exp8_nonpositive(vec8 x) {
    const vec8 lowest = {-87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    const ivec8 low = x < lowest;
    x = (vec8)(((ivec8)x & ~low) | ((ivec8)lowest & low));
    const ivec8 n = __builtin_convertvector(x * 1.44269504089f - 0.5f, ivec8);
    const vec8 nf = __builtin_convertvector(n, vec8);
    vec8 r = x - nf * 0.693359375f;
    r = r + nf * 2.12194440e-4f;
    vec8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (vec8)((n + 127) << 23);
}

CLONES static void softmax_weights(const float *s, Py_ssize_t n, float top, float factor, float *w) {
    Py_ssize_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const vec8 e = exp8_nonpositive((load8(s + k) - top) * factor);
        memcpy(w + k, &e, sizeof e);
    }
    for (; k < n; k++) w[k] = exp_nonpositive((s[k] - top) * factor);
}

/* out[c] = dot(w, votes_t + c * n, n) for every column c, each summed exactly as dot sums it, in one pass over
 * the weights (the columns' sums side by side, not one column after the other). */
CLONES static void column_sums(const float *w, const float *votes_t, Py_ssize_t n, Py_ssize_t cols, float *out) {
    vec8 lanes[MAX_COLS];
    const Py_ssize_t body = n - n % LANES;
    for (Py_ssize_t c = 0; c < cols; c++) lanes[c] = (vec8){0};
    for (Py_ssize_t k = 0; k < body; k += LANES) {
        const vec8 wv = load8(w + k);
        for (Py_ssize_t c = 0; c < cols; c++) lanes[c] += wv * load8(votes_t + c * n + k);
    }
    for (Py_ssize_t c = 0; c < cols; c++) {
        const float *col = votes_t + c * n;
        float acc = 0.0f;
        for (Py_ssize_t k = body; k < n; k++) acc += w[k] * col[k];
        for (int l = 0; l < LANES; l++) acc += lanes[c][l];
        out[c] = acc;
    }
}
#else
static void similarities(const float *matrix, const float *x, Py_ssize_t n, Py_ssize_t dim, const float *vec_mean,
                         float *s) {
    for (Py_ssize_t k = 0; k < n; k++) s[k] = dot(matrix + k * dim, x, dim) - vec_mean[k];
}

static void column_sums(const float *w, const float *votes_t, Py_ssize_t n, Py_ssize_t cols, float *out) {
    for (Py_ssize_t c = 0; c < cols; c++) out[c] = dot(w, votes_t + c * n, n);
}

static void softmax_weights(const float *s, Py_ssize_t n, float top, float factor, float *w) {
    for (Py_ssize_t k = 0; k < n; k++) w[k] = exp_nonpositive((s[k] - top) * factor);
}
#endif

/* out = the unit vector of sum(scale[id] * table[id]) (all zeros stay zeros); returns the norm the sum had. */
static double unit_sum(const int32_t *ids, Py_ssize_t n, const int8_t *table, const float *scale, Py_ssize_t dim,
                       float *out) {
    memset(out, 0, (size_t)dim * sizeof(float));
    add_rows(ids, n, table, scale, dim, out);
    double sq = 0.0;
    for (Py_ssize_t j = 0; j < dim; j++) sq += (double)out[j] * out[j];
    const double norm = sqrt(sq);
    if (norm > 0.0) {
        const float inv = (float)(1.0 / norm);
        for (Py_ssize_t j = 0; j < dim; j++) out[j] *= inv;
    }
    return norm;
}

/* embed(ids: int32[n], table: int8[V, D], scale: float32[V], out: float32[D]) -> float
 * Writes the unit vector of sum(scale[id] * table[id]) into out and returns the norm it had
 * (0.0 leaves out all zeros). */
static PyObject *embed(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!arg_count("embed", 4, nargs)) return NULL;
    static const char *const names[] = {"ids", "table", "scale", "out"};
    Py_buffer v[4];
    PyObject *res = NULL;
    if (!get_buffers(args, names, 1u << 3, 4, v)) return NULL;
    Py_ssize_t vocab, dim;
    const Py_ssize_t n = v[0].len / 4;
    if (!embedding_sizes(&v[1], &v[2], &v[3], &vocab, &dim) || !ids_in_vocabulary(v[0].buf, n, vocab)) goto done;
    res = PyFloat_FromDouble(unit_sum(v[0].buf, n, v[1].buf, v[2].buf, dim, v[3].buf));
done:
    release(v, 4);
    return res;
}

/* Python's str.split() breaks at these controls, which BERT deletes instead: texts holding one take the Python path. */
static int deleted_control(Py_UCS4 ch) {
    return ch == 0x0b || ch == 0x0c || ch == 0x85 || (ch >= 0x1c && ch <= 0x1f);
}

/* embed_text's memory of recent chunks, in front of the tokenizer's dict: a direct-mapped table by a hash
 * computed while splitting, so that a chunk seen before costs neither a str object nor a siphash. The dict
 * only grows and a chunk's ids never change, so a slot stays right. The slots belong to one dict at a time:
 * another dict makes them all stale at once (they are released as they are filled again). */
#define CHUNK_SLOTS 16384
#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

typedef struct {
    uint64_t hash;
    uint64_t owner; /* the owner's number when filled: slots of an earlier owner never match */
    PyObject *key; /* the chunk (str) */
    PyObject *ids; /* its ids (bytes), as in the dict */
} ChunkSlot;

static ChunkSlot chunk_slots[CHUNK_SLOTS];
static PyObject *chunk_owner = NULL; /* held, so that no other dict takes its address while it owns the slots */
static uint64_t chunk_owner_number = 0;

/* Whether key (a str) holds the characters [start, end) of data (of the given kind). */
static int same_text(PyObject *key, int kind, const void *data, Py_ssize_t start, Py_ssize_t end) {
    const Py_ssize_t n = end - start;
    if (PyUnicode_GET_LENGTH(key) != n) return 0;
    const int key_kind = PyUnicode_KIND(key);
    const void *key_data = PyUnicode_DATA(key);
    if (key_kind == kind) return memcmp(key_data, (const char *)data + start * kind, (size_t)(n * kind)) == 0;
    for (Py_ssize_t k = 0; k < n; k++)
        if (PyUnicode_READ(key_kind, key_data, k) != PyUnicode_READ(kind, data, start + k)) return 0;
    return 1;
}

/* embed_text(text: str, chunks: dict[str, bytes], table: int8[V, D], scale: float32[V], out: float32[D],
 *            max_chars: int, max_tokens: int) -> None | int
 * The tokenizer's cached path and embed in one pass: the first max_chars characters of text are split at
 * whitespace as str.split() does, each chunk's ids (int32 bytes) are read from chunks, and the first
 * max_tokens ids are embedded into out as embed() does. Returns the number of ids embedded; None when a
 * chunk is not in chunks or the text holds a control character BERT deletes (the caller then tokenises
 * in Python, which fills chunks). */
static PyObject *embed_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!arg_count("embed_text", 7, nargs)) return NULL;
    PyObject *text = args[0], *chunks = args[1];
    if (!PyUnicode_Check(text) || !PyDict_Check(chunks)) {
        PyErr_SetString(PyExc_TypeError, "embed_text() takes a str and a dict as its first two arguments");
        return NULL;
    }
    const Py_ssize_t max_chars = PyLong_AsSsize_t(args[5]), max_tokens = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) return NULL;
    if (max_tokens < 0 || max_tokens > MAX_TOKENS) {
        PyErr_Format(PyExc_ValueError, "max_tokens: %zd outside 0..%d", max_tokens, MAX_TOKENS);
        return NULL;
    }
    int32_t ids_buf[MAX_TOKENS];
    static const char *const names[] = {"table", "scale", "out"};
    Py_buffer v[3];
    PyObject *res = NULL;
    if (!get_buffers(args + 2, names, 1u << 2, 3, v)) return NULL;
    Py_ssize_t vocab, dim;
    if (!embedding_sizes(&v[0], &v[1], &v[2], &vocab, &dim)) goto done;
    if (chunks != chunk_owner) {  /* another tokenizer's cache: the last one's slots go stale */
        Py_XSETREF(chunk_owner, Py_NewRef(chunks));
        chunk_owner_number++;
    }
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t len = PyUnicode_GET_LENGTH(text) < max_chars ? PyUnicode_GET_LENGTH(text) : max_chars;
    Py_ssize_t used = 0, i = 0;
    while (i < len && used < max_tokens) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (Py_UNICODE_ISSPACE(ch)) {
            if (deleted_control(ch)) goto fallback;
            i++;
            continue;
        }
        const Py_ssize_t start = i;
        uint64_t hash = FNV_OFFSET;
        while (i < len) {
            ch = PyUnicode_READ(kind, data, i);
            if (Py_UNICODE_ISSPACE(ch)) break;
            hash = (hash ^ ch) * FNV_PRIME;
            i++;
        }
        ChunkSlot *slot = &chunk_slots[(hash ^ (hash >> 32)) & (CHUNK_SLOTS - 1)];
        PyObject *ids;
        if (slot->owner == chunk_owner_number && slot->hash == hash && same_text(slot->key, kind, data, start, i)) {
            ids = slot->ids;
        } else {
            PyObject *chunk = PyUnicode_Substring(text, start, i);
            if (chunk == NULL) goto done;
            ids = PyDict_GetItemWithError(chunks, chunk);  /* borrowed */
            if (ids == NULL) {
                Py_DECREF(chunk);
                if (PyErr_Occurred()) goto done;
                goto fallback;
            }
            Py_XDECREF(slot->key);
            Py_XDECREF(slot->ids);
            slot->hash = hash;
            slot->owner = chunk_owner_number;
            slot->key = chunk;  /* the reference taken by PyUnicode_Substring */
            slot->ids = Py_NewRef(ids);
        }
        if (!PyBytes_Check(ids) || PyBytes_GET_SIZE(ids) % 4) {
            PyErr_SetString(PyExc_TypeError, "chunks: values must be int32 ids as bytes");
            goto done;
        }
        const int32_t *found = (const int32_t *)PyBytes_AS_STRING(ids);
        Py_ssize_t count = PyBytes_GET_SIZE(ids) / 4;
        if (count > max_tokens - used) count = max_tokens - used;
        if (!ids_in_vocabulary(found, count, vocab)) goto done;
        memcpy(ids_buf + used, found, (size_t)count * sizeof(int32_t));
        used += count;
    }
    /* Stopped at max_tokens right before such a control: Python would join the last chunk with the next one. */
    if (i < len && deleted_control(PyUnicode_READ(kind, data, i))) goto fallback;
    unit_sum(ids_buf, used, v[0].buf, v[1].buf, dim, v[2].buf);
    res = PyLong_FromSsize_t(used);
    goto done;
fallback:
    res = Py_NewRef(Py_None);
done:
    release(v, 3);
    return res;
}

/* vote(v: float32[D], matrix: float32[N + 1, D], vec_mean: float32[N], mean_sq: float, votes_t: float32[C, N],
 *      factor: float, s: float32[N]) -> None | (list of C floats, best index, best similarity, inverse norm)
 * matrix holds the N centred examples and, last, the examples' mean. Writes the centred similarities
 * into s, takes softmax weights exp((s - max s) * inv * factor) and returns each column of votes_t
 * summed with them; None when v (or v minus the mean) is zero. */
static PyObject *vote(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!arg_count("vote", 7, nargs)) return NULL;
    const double mean_sq = PyFloat_AsDouble(args[3]), factor = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred()) return NULL;
    /* buffers of v, matrix, vec_mean, votes_t and s (arguments 0, 1, 2, 4, 6) */
    static const char *const names[] = {"v", "matrix", "vec_mean", "votes_t", "s"};
    PyObject *const objs[] = {args[0], args[1], args[2], args[4], args[6]};
    Py_buffer b[5];
    PyObject *res = NULL;
    float *weights = NULL;
    if (!get_buffers(objs, names, 1u << 4, 5, b)) return NULL;
    const Py_ssize_t dim = b[0].len / 4, n = b[2].len / 4;
    const Py_ssize_t cols = n > 0 ? b[3].len / 4 / n : 0;
    if (n <= 0 || dim <= 0) {
        PyErr_SetString(PyExc_ValueError, "vote() needs at least one example and a non-empty vector");
        goto done;
    }
    if (cols <= 0 || cols > MAX_COLS) {
        PyErr_Format(PyExc_ValueError, "votes_t: %zd columns, expected 1..%d", cols, MAX_COLS);
        goto done;
    }
    if (!check_len(&b[1], (n + 1) * dim * 4, "matrix") || !check_len(&b[3], cols * n * 4, "votes_t")
        || !check_len(&b[4], n * 4, "s"))
        goto done;
    const float *x = b[0].buf, *matrix = b[1].buf, *vec_mean = b[2].buf, *votes_t = b[3].buf;
    float *s = b[4].buf;
    const float vv = dot(x, x, dim);
    const double norm2 = (double)vv - 2.0 * (double)dot(matrix + n * dim, x, dim) + mean_sq;
    if (vv <= 1e-12 || norm2 <= 1e-12) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    similarities(matrix, x, n, dim, vec_mean, s);
    Py_ssize_t best = 0;
    for (Py_ssize_t k = 1; k < n; k++)
        if (s[k] > s[best]) best = k;
    const double inv = 1.0 / sqrt(norm2);
    weights = PyMem_Malloc((size_t)n * sizeof(float));
    if (weights == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    softmax_weights(s, n, s[best], (float)(inv * factor), weights);
    float col_sums[MAX_COLS];
    column_sums(weights, votes_t, n, cols, col_sums);
    PyObject *sums = PyList_New(cols);
    if (sums == NULL) goto done;
    for (Py_ssize_t c = 0; c < cols; c++) {
        PyObject *f = PyFloat_FromDouble((double)col_sums[c]);
        if (f == NULL) {
            Py_DECREF(sums);
            goto done;
        }
        PyList_SET_ITEM(sums, c, f);
    }
    res = Py_BuildValue("(Nndd)", sums, best, (double)s[best], inv);
done:
    PyMem_Free(weights);
    release(b, 5);
    return res;
}

/* estimate_counts(raw: bytes, marks: bytes[256]) -> (spaces, space pairs, newlines, marked 1, marked 2)
 * The counts the token estimate weighs, in one pass: what raw.count(b" "), raw.count(b"  ") (pairs within
 * each run), raw.count(b"\n") and raw.translate(marks).count(b"\x01") / (b"\x02") give. */
static PyObject *estimate_counts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!arg_count("estimate_counts", 2, nargs)) return NULL;
    if (!PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != 256) {
        PyErr_SetString(PyExc_TypeError, "estimate_counts() takes bytes and a 256-byte translation table");
        return NULL;
    }
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *marks = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    const Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t spaces = 0, pairs = 0, newlines = 0, ones = 0, twos = 0;
    unsigned run = 0; /* spaces in a row so far: every second one ends a pair */
    /* Sums of comparisons (no branch on the irregular spaces, no histogram in memory). */
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned c = raw[i], mark = marks[c], space = c == ' ';
        ones += mark == 1;
        twos += mark == 2;
        newlines += c == '\n';
        spaces += space;
        run = space ? run + 1 : 0;
        pairs += space & ~run;
    }
    return Py_BuildValue("(nnnnn)", spaces, pairs, newlines, ones, twos);
}

static PyMethodDef methods[] = {
    {"estimate_counts", (PyCFunction)(void (*)(void))estimate_counts, METH_FASTCALL,
     "estimate_counts(raw, marks) -> (spaces, space pairs, newlines, marked 1, marked 2): the token estimate's counts."},
    {"embed", (PyCFunction)(void (*)(void))embed, METH_FASTCALL,
     "embed(ids, table, scale, out) -> norm: the unit static embedding of int32 token ids, written into out."},
    {"embed_text", (PyCFunction)(void (*)(void))embed_text, METH_FASTCALL,
     "embed_text(text, chunks, table, scale, out, max_chars, max_tokens) -> None | count: embed over cached chunk ids."},
    {"vote", (PyCFunction)(void (*)(void))vote, METH_FASTCALL,
     "vote(v, matrix, vec_mean, mean_sq, votes_t, factor, s) -> None | (sums, best, best_s, inv): the softmax vote."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_vote", "Native embedding and vote of the semantic classifier.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__vote(void) { return PyModule_Create(&module); }
