/*
 * The per-entry work of a directory listing and of its output rows, compiled.
 *
 * `Scanner` is `FilesystemConnector`'s pure-Python listing (`os.scandir` and `lstat`), entry by
 * entry: the same records, keys and digests (BLAKE2b, RFC 7693, here), in the same order. Its system calls run without
 * the GIL, a batch at a time. An entry that needs more than a directory's or a file's record
 * (a symlink, an `lstat` that failed, a time past what 64 bits of nanoseconds hold) is handed
 * back to Python, which makes its record as the pure-Python listing does.
 *
 * `encode_rows` is `engine._binary_rows`'s loop over one group of entries: PostgreSQL's binary
 * COPY rows, byte for byte. What is rare (a key that is not ASCII, a missing size or time, an
 * entry's metadata) it asks Python for, through the callables it is given.
 *
 * `sort_by_digest` orders a commit's rows as the output table's unique key does
 * (`engine._in_digest_order`).
 *
 * tests/test_compiled_listing.py holds each against its pure-Python twin.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What `configure` is given: the Entry type (a NamedTuple) and the record types. */
static PyObject *entry_type, *type_file, *type_directory, *type_other;

#define ENTRY_FIELDS 7 /* record_type, key, digest, name, size, mtime_ns, metadata */

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *e, *f, *d, *o;
    if (!PyArg_ParseTuple(args, "O!OOO:configure", &PyType_Type, &e, &f, &d, &o))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)e, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure: the entry type must be a tuple type");
        return NULL;
    }
    Py_INCREF(e);
    Py_XSETREF(entry_type, e);
    Py_INCREF(f);
    Py_XSETREF(type_file, f);
    Py_INCREF(d);
    Py_XSETREF(type_directory, d);
    Py_INCREF(o);
    Py_XSETREF(type_other, o);
    Py_RETURN_NONE;
}

/* --- listing ------------------------------------------------------------------------------ */

enum kind { K_DIRECTORY, K_FILE, K_OTHER, K_PYTHON, K_GONE };

typedef struct {
    size_t name_at, name_len;
    enum kind kind;
    int64_t size, mtime_ns;
} raw_entry;

typedef struct {
    raw_entry *entries;
    size_t count, capacity;
    char *names;
    size_t names_len, names_capacity;
} raw_batch;

static int
raw_batch_add(raw_batch *b, const char *name, size_t len)
{
    if (b->count == b->capacity) {
        size_t capacity = b->capacity ? b->capacity * 2 : 128;
        raw_entry *grown = realloc(b->entries, capacity * sizeof(raw_entry));
        if (grown == NULL)
            return -1;
        b->entries = grown;
        b->capacity = capacity;
    }
    if (b->names_len + len > b->names_capacity) {
        size_t capacity = b->names_capacity ? b->names_capacity : 4096;
        while (capacity < b->names_len + len)
            capacity *= 2;
        char *grown = realloc(b->names, capacity);
        if (grown == NULL)
            return -1;
        b->names = grown;
        b->names_capacity = capacity;
    }
    memcpy(b->names + b->names_len, name, len);
    raw_entry *e = &b->entries[b->count++];
    e->name_at = b->names_len;
    e->name_len = len;
    b->names_len += len;
    return 0;
}

static void
raw_batch_free(raw_batch *b)
{
    free(b->entries);
    free(b->names);
}

/* The seconds whose nanoseconds fit in 64 bits with room to spare: every such time is within
 * the years a record holds (base.MTIME_MIN_NS..MTIME_MAX_NS); Python judges the others. */
#define SAFE_SECONDS 9000000000LL

/* What the pure-Python listing makes of an entry, by its d_type and (for what is not a
 * directory) its lstat; called without the GIL. */
static void
raw_entry_classify(int dir_fd, const char *name, unsigned char d_type, raw_entry *e)
{
    struct stat st;
    if (d_type == DT_DIR) {
        e->kind = K_DIRECTORY;
        return;
    }
    if (d_type == DT_LNK) {
        e->kind = K_PYTHON;
        return;
    }
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        e->kind = errno == ENOENT ? K_GONE : K_PYTHON;
        return;
    }
    /* What lstat says the entry is, whatever d_type said (it may have been replaced since, or
     * the filesystem may not say): a directory is a unit to list, a symlink goes to Python. */
    if (S_ISDIR(st.st_mode)) {
        e->kind = K_DIRECTORY;
        return;
    }
    if (S_ISLNK(st.st_mode)) {
        e->kind = K_PYTHON;
        return;
    }
    if (st.st_mtim.tv_sec > SAFE_SECONDS || st.st_mtim.tv_sec < -SAFE_SECONDS) {
        e->kind = K_PYTHON;
        return;
    }
    e->kind = S_ISREG(st.st_mode) ? K_FILE : K_OTHER;
    e->size = (int64_t)st.st_size;
    e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

typedef struct {
    PyObject_HEAD
    DIR *dir;
    PyObject *unit; /* bytes */
    int separator;  /* whether a '/' goes between the unit and a name */
} Scanner;

static int
Scanner_init(Scanner *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"unit", NULL};
    PyObject *unit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Scanner", keywords, &PyBytes_Type, &unit))
        return -1;
    if (self->dir != NULL) {
        closedir(self->dir);
        self->dir = NULL;
    }
    Py_INCREF(unit);
    Py_XSETREF(self->unit, unit);
    const char *path = PyBytes_AS_STRING(unit);
    Py_ssize_t len = PyBytes_GET_SIZE(unit);
    if ((Py_ssize_t)strlen(path) != len) {
        PyErr_SetString(PyExc_ValueError, "Scanner: embedded null character in path");
        return -1;
    }
    self->separator = len > 0 && path[len - 1] != '/';
    DIR *dir;
    Py_BEGIN_ALLOW_THREADS
    dir = opendir(path);
    Py_END_ALLOW_THREADS
    if (dir == NULL) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, unit);
        return -1;
    }
    self->dir = dir;
    return 0;
}

static void
Scanner_close_dir(Scanner *self)
{
    if (self->dir != NULL) {
        closedir(self->dir);
        self->dir = NULL;
    }
}

static void
Scanner_dealloc(Scanner *self)
{
    Scanner_close_dir(self);
    Py_XDECREF(self->unit);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Scanner_close(Scanner *self, PyObject *Py_UNUSED(ignored))
{
    Scanner_close_dir(self);
    Py_RETURN_NONE;
}

static PyObject *
Scanner_enter(Scanner *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
Scanner_exit(Scanner *self, PyObject *args)
{
    Scanner_close_dir(self);
    Py_RETURN_NONE;
}

/* --- BLAKE2b (RFC 7693) with a 16-byte digest and no key: keys.key_digest ---------------- */

static const uint64_t blake2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t blake2b_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t
rotr64(uint64_t x, int n)
{
    return (x >> n) | (x << (64 - n));
}

#define G(a, b, c, d, x, y)                                                                   \
    do {                                                                                      \
        v[a] = v[a] + v[b] + (x);                                                             \
        v[d] = rotr64(v[d] ^ v[a], 32);                                                       \
        v[c] = v[c] + v[d];                                                                   \
        v[b] = rotr64(v[b] ^ v[c], 24);                                                       \
        v[a] = v[a] + v[b] + (y);                                                             \
        v[d] = rotr64(v[d] ^ v[a], 16);                                                       \
        v[c] = v[c] + v[d];                                                                   \
        v[b] = rotr64(v[b] ^ v[c], 63);                                                       \
    } while (0)

/* One 128-byte block into the state h; `counted` is the bytes hashed so far, this block's
 * included (a key is far shorter than 2**64 bytes: the counter's high word stays 0). */
static void
blake2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t counted, int last)
{
    uint64_t m[16], v[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, sizeof m); /* the message words are little-endian, as this machine is */
#else
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int j = 7; j >= 0; j--)
            w = (w << 8) | block[i * 8 + j];
        m[i] = w;
    }
#endif
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= counted;
    if (last)
        v[14] = ~v[14];
    for (int round = 0; round < 12; round++) {
        const uint8_t *s = blake2b_sigma[round % 10];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

#undef G

#define DIGEST_SIZE 16

static void
blake2b_16(const uint8_t *data, size_t len, uint8_t out[DIGEST_SIZE])
{
    uint64_t h[8];
    memcpy(h, blake2b_iv, sizeof h);
    h[0] ^= 0x01010000ULL ^ DIGEST_SIZE; /* depth 1, fanout 1, no key, 16-byte digest */
    size_t done = 0;
    while (len - done > 128) { /* every block but the last, which may be full */
        blake2b_compress(h, data + done, done + 128, 0);
        done += 128;
    }
    uint8_t last[128] = {0};
    memcpy(last, data + done, len - done);
    blake2b_compress(h, last, len, 1);
    for (int i = 0; i < DIGEST_SIZE; i++)
        out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
}

/* keys.key_digest(key) for bytes, as a new 16-byte bytes object. */
static PyObject *
key_digest(PyObject *key)
{
    PyObject *digest = PyBytes_FromStringAndSize(NULL, DIGEST_SIZE);
    if (digest == NULL)
        return NULL;
    blake2b_16((const uint8_t *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
               (uint8_t *)PyBytes_AS_STRING(digest));
    return digest;
}

static PyObject *
key_digest_function(PyObject *module, PyObject *key)
{
    if (!PyBytes_Check(key)) {
        PyErr_Format(PyExc_TypeError, "key_digest: expected bytes, got %.100s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    return key_digest(key);
}

static PyObject *
entry_new(PyObject *record_type, PyObject *key, PyObject *digest, PyObject *name,
          PyObject *size, PyObject *mtime_ns)
{
    /* A NamedTuple's own __new__ is Python; its fields are all given here. */
    PyObject *entry = ((PyTypeObject *)entry_type)->tp_alloc((PyTypeObject *)entry_type,
                                                            ENTRY_FIELDS);
    if (entry == NULL)
        return NULL;
    PyObject *fields[ENTRY_FIELDS] = {record_type, key, digest, name, size, mtime_ns, Py_None};
    for (int i = 0; i < ENTRY_FIELDS; i++) {
        PyTuple_SET_ITEM(entry, i, Py_NewRef(fields[i]));
    }
    return entry;
}

/* The Python objects of one listed batch: (entries, handed back), or NULL. `entries` holds
 * None where an entry is handed back; `handed back` holds (index, key, name, digest) for each. */
static PyObject *
raw_batch_objects(Scanner *self, raw_batch *b)
{
    PyObject *entries = PyList_New(0), *handed = PyList_New(0), *result = NULL;
    if (entries == NULL || handed == NULL)
        goto done;
    const char *unit = PyBytes_AS_STRING(self->unit);
    size_t unit_len = (size_t)PyBytes_GET_SIZE(self->unit);
    for (size_t i = 0; i < b->count; i++) {
        raw_entry *e = &b->entries[i];
        if (e->kind == K_GONE)
            continue; /* removed between the listing and its lstat: not there any more */
        const char *name_bytes = b->names + e->name_at;
        PyObject *name = PyBytes_FromStringAndSize(name_bytes, (Py_ssize_t)e->name_len);
        PyObject *key = PyBytes_FromStringAndSize(
            NULL, (Py_ssize_t)(unit_len + self->separator + e->name_len));
        if (name == NULL || key == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(key);
            goto done;
        }
        char *at = PyBytes_AS_STRING(key);
        memcpy(at, unit, unit_len);
        if (self->separator)
            at[unit_len] = '/';
        memcpy(at + unit_len + self->separator, name_bytes, e->name_len);
        PyObject *digest = key_digest(key);
        PyObject *item = NULL;
        if (digest != NULL) {
            if (e->kind == K_PYTHON) {
                item = Py_BuildValue("(nOOO)", PyList_GET_SIZE(entries), key, name, digest);
                if (item != NULL && PyList_Append(handed, item) == 0) {
                    Py_DECREF(item);
                    item = Py_NewRef(Py_None);
                }
                else {
                    Py_CLEAR(item);
                }
            }
            else if (e->kind == K_DIRECTORY) {
                item = entry_new(type_directory, key, digest, name, Py_None, Py_None);
            }
            else {
                PyObject *size = PyLong_FromLongLong(e->size);
                PyObject *mtime = PyLong_FromLongLong(e->mtime_ns);
                if (size != NULL && mtime != NULL)
                    item = entry_new(e->kind == K_FILE ? type_file : type_other, key, digest,
                                     name, size, mtime);
                Py_XDECREF(size);
                Py_XDECREF(mtime);
            }
        }
        Py_XDECREF(digest);
        Py_DECREF(key);
        Py_DECREF(name);
        if (item == NULL)
            goto done;
        int failed = PyList_Append(entries, item);
        Py_DECREF(item);
        if (failed)
            goto done;
    }
    result = PyTuple_Pack(2, entries, handed);
done:
    Py_XDECREF(entries);
    Py_XDECREF(handed);
    return result;
}

/* Scanner.next_batch(size): up to `size` entries, as (entries, handed back), or None once the
 * directory is listed to its end. An OSError of the listing itself is raised. */
static PyObject *
Scanner_next_batch(Scanner *self, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "next_batch: the batch size must be at least 1");
        return NULL;
    }
    if (self->dir == NULL) {
        PyErr_SetString(PyExc_ValueError, "next_batch: the scanner is closed");
        return NULL;
    }
    raw_batch b = {0};
    int error = 0, out_of_memory = 0;
    DIR *dir = self->dir;
    Py_BEGIN_ALLOW_THREADS
    int fd = dirfd(dir);
    while ((Py_ssize_t)b.count < size) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (d == NULL) {
            error = errno;
            break;
        }
        const char *name = d->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        if (raw_batch_add(&b, name, strlen(name)) != 0) {
            out_of_memory = 1;
            break;
        }
        raw_entry_classify(fd, name, d->d_type, &b.entries[b.count - 1]);
    }
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (out_of_memory) {
        PyErr_NoMemory();
    }
    else if (error) {
        errno = error;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->unit);
    }
    else if (b.count == 0) {
        result = Py_NewRef(Py_None);
    }
    else {
        result = raw_batch_objects(self, &b);
    }
    raw_batch_free(&b);
    return result;
}

static PyMethodDef Scanner_methods[] = {
    {"next_batch", (PyCFunction)Scanner_next_batch, METH_O,
     "next_batch(size): up to size entries as (entries, handed back), or None at the end."},
    {"close", (PyCFunction)Scanner_close, METH_NOARGS, "Close the directory."},
    {"__enter__", (PyCFunction)Scanner_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Scanner_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "enumeration.connectors._scan.Scanner",
    .tp_doc = PyDoc_STR("Scanner(unit): one level of a directory, listed in batches."),
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

/* --- binary COPY rows --------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, capacity;
} buffer;

static int
buffer_reserve(buffer *b, size_t more)
{
    if (b->len + more <= b->capacity)
        return 0;
    size_t capacity = b->capacity ? b->capacity : 65536;
    while (capacity < b->len + more)
        capacity *= 2;
    char *grown = realloc(b->data, capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static void
put(buffer *b, const void *data, size_t len)
{
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void
put_i16(buffer *b, int16_t v)
{
    uint16_t u = (uint16_t)v;
    unsigned char out[2] = {(unsigned char)(u >> 8), (unsigned char)u};
    put(b, out, 2);
}

static void
put_i32(buffer *b, int32_t v)
{
    uint32_t u = (uint32_t)v;
    unsigned char out[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16),
                            (unsigned char)(u >> 8), (unsigned char)u};
    put(b, out, 4);
}

static void
put_i64(buffer *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    unsigned char out[8];
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)u;
        u >>= 8;
    }
    put(b, out, 8);
}

static int
put_bytes_object(buffer *b, PyObject *value)
{
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "encode_rows: expected bytes, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    if (buffer_reserve(b, (size_t)PyBytes_GET_SIZE(value)) != 0)
        return -1;
    put(b, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
    return 0;
}

static const char RAW_PREFIX[] = "base64:";

/* Whether a key's bytes are already what `keys.encode_key` stores: ASCII, without the mark. */
static int
stored_as_is(PyObject *raw)
{
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    for (Py_ssize_t i = 0; i < len; i++) {
        if (s[i] & 0x80)
            return 0;
    }
    return !(len >= (Py_ssize_t)sizeof(RAW_PREFIX) - 1 &&
             memcmp(s, RAW_PREFIX, sizeof(RAW_PREFIX) - 1) == 0);
}

/* A key as stored, UTF-8 encoded: the raw bytes themselves, or encode_key's text. New ref. */
static PyObject *
stored_key(PyObject *raw, PyObject *encode_key)
{
    if (!PyBytes_Check(raw)) {
        PyErr_Format(PyExc_TypeError, "encode_rows: a key must be bytes, not %.100s",
                     Py_TYPE(raw)->tp_name);
        return NULL;
    }
    if (stored_as_is(raw))
        return Py_NewRef(raw);
    PyObject *text = PyObject_CallOneArg(encode_key, raw);
    if (text == NULL)
        return NULL;
    PyObject *encoded = PyUnicode_AsUTF8String(text);
    Py_DECREF(text);
    return encoded;
}

/* A Python int as 64 bits; 0 with *fits cleared when it does not fit (or is not an int). */
static int64_t
as_int64(PyObject *value, int *fits)
{
    int overflow = 0;
    long long v = PyLong_Check(value) ? PyLong_AsLongLongAndOverflow(value, &overflow) : 0;
    if (!PyLong_Check(value) || overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *fits = 0;
        return 0;
    }
    return (int64_t)v;
}

#define PG_EPOCH_US 946684800000000LL /* 2000-01-01 UTC, in Unix microseconds */

static int64_t
floor_div_1000(int64_t v)
{
    int64_t q = v / 1000;
    return (v % 1000 != 0 && v < 0) ? q - 1 : q;
}

/* One entry's row (after its id, if any); 0 or -1 with an exception set. */
static int
encode_row(buffer *out, PyObject *entry, PyObject *heads, PyObject *empty_tail,
           PyObject *suffix, PyObject *encode_key, PyObject *entry_fields,
           PyObject *metadata_field)
{
    PyObject *head = PyDict_GetItemWithError(heads, PyTuple_GET_ITEM(entry, 0));
    if (head == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, PyTuple_GET_ITEM(entry, 0));
        return -1;
    }
    if (put_bytes_object(out, head) != 0)
        return -1;
    PyObject *key = stored_key(PyTuple_GET_ITEM(entry, 1), encode_key);
    if (key == NULL)
        return -1;
    PyObject *name = stored_key(PyTuple_GET_ITEM(entry, 3), encode_key);
    if (name == NULL) {
        Py_DECREF(key);
        return -1;
    }
    PyObject *digest = PyTuple_GET_ITEM(entry, 2);
    PyObject *size = PyTuple_GET_ITEM(entry, 4), *mtime = PyTuple_GET_ITEM(entry, 5);
    int fits = size != Py_None && mtime != Py_None && PyBytes_Check(digest) &&
               PyBytes_GET_SIZE(digest) == 16;
    int64_t size_v = fits ? as_int64(size, &fits) : 0;
    int64_t mtime_v = fits ? as_int64(mtime, &fits) : 0;
    int status = 0;
    if (fits) {
        /* The common case, a file: its key, hash, name, size and time, as _file_packer packs. */
        size_t key_len = (size_t)PyBytes_GET_SIZE(key), name_len = (size_t)PyBytes_GET_SIZE(name);
        if (key_len > INT32_MAX || name_len > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "encode_rows: a key too long for a row");
            status = -1;
        }
        else if (buffer_reserve(out, 4 + key_len + 4 + 16 + 4 + name_len + 12 + 12) != 0) {
            status = -1;
        }
        else {
            put_i32(out, (int32_t)key_len);
            put(out, PyBytes_AS_STRING(key), key_len);
            put_i32(out, 16);
            put(out, PyBytes_AS_STRING(digest), 16);
            put_i32(out, (int32_t)name_len);
            put(out, PyBytes_AS_STRING(name), name_len);
            put_i32(out, 8);
            put_i64(out, size_v);
            put_i32(out, 8);
            put_i64(out, floor_div_1000(mtime_v) - PG_EPOCH_US);
        }
    }
    else {
        PyObject *fields = PyObject_CallFunctionObjArgs(entry_fields, entry, key, name, NULL);
        status = fields == NULL ? -1 : put_bytes_object(out, fields);
        Py_XDECREF(fields);
    }
    Py_DECREF(key);
    Py_DECREF(name);
    if (status != 0)
        return -1;
    PyObject *metadata = PyTuple_GET_ITEM(entry, 6);
    int has_metadata = PyObject_IsTrue(metadata);
    if (has_metadata < 0)
        return -1;
    if (!has_metadata)
        return put_bytes_object(out, empty_tail);
    PyObject *field = PyObject_CallOneArg(metadata_field, metadata);
    status = field == NULL ? -1 : put_bytes_object(out, field);
    Py_XDECREF(field);
    return status != 0 ? -1 : put_bytes_object(out, suffix);
}

/* One entry, led by its field count and id when `ids` is not None; 0 or -1 with an exception
 * set. */
static int
encode_entry(buffer *b, PyObject *entry, PyObject *heads, PyObject *empty_tail, PyObject *suffix,
             PyObject *ids, int field_count, PyObject *encode_key, PyObject *entry_fields,
             PyObject *metadata_field)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != ENTRY_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "encode_rows: an entry must be an Entry");
        return -1;
    }
    if (ids != Py_None) {
        PyObject *id = PyIter_Next(ids);
        if (id == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "encode_rows: fewer ids than entries");
            return -1;
        }
        int fits = 1;
        int64_t value = as_int64(id, &fits);
        Py_DECREF(id);
        if (!fits) {
            PyErr_SetString(PyExc_OverflowError, "encode_rows: an id past 64 bits");
            return -1;
        }
        if (buffer_reserve(b, 14) != 0)
            return -1;
        put_i16(b, (int16_t)field_count);
        put_i32(b, 8);
        put_i64(b, value);
    }
    return encode_row(b, entry, heads, empty_tail, suffix, encode_key, entry_fields,
                      metadata_field);
}

/* encode_rows(out, entries, heads, empty_tail, suffix, ids, field_count, encode_key,
 *             entry_fields, metadata_field): append the rows of `entries` to the bytearray
 * `out`, each led by its field count and the next of the iterator `ids` when `ids` is not None
 * (the field count is then not in the heads). */
static PyObject *
encode_rows(PyObject *module, PyObject *args)
{
    PyObject *out, *entries, *heads, *empty_tail, *suffix, *ids, *encode_key, *entry_fields,
        *metadata_field;
    int field_count;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OiOOO:encode_rows", &PyByteArray_Type, &out,
                          &PyList_Type, &entries, &PyDict_Type, &heads, &PyBytes_Type,
                          &empty_tail, &PyBytes_Type, &suffix, &ids, &field_count, &encode_key,
                          &entry_fields, &metadata_field))
        return NULL;
    if (ids != Py_None && !PyIter_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "encode_rows: ids must be an iterator or None");
        return NULL;
    }
    buffer b = {0};
    /* The callables and the ids' iterator are Python code that could change `entries`: the
     * list's length is read again for each entry, and the entry held while it is encoded. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *entry = Py_NewRef(PyList_GET_ITEM(entries, i));
        int status = encode_entry(&b, entry, heads, empty_tail, suffix, ids, field_count,
                                  encode_key, entry_fields, metadata_field);
        Py_DECREF(entry);
        if (status != 0)
            goto failed;
    }
    Py_ssize_t start = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, start + (Py_ssize_t)b.len) != 0)
        goto failed;
    if (b.len)
        memcpy(PyByteArray_AS_STRING(out) + start, b.data, b.len);
    free(b.data);
    Py_RETURN_NONE;
failed:
    free(b.data);
    return NULL;
}

/* --- module ------------------------------------------------------------------------------- */

/* `sort_by_digest`: order 16-byte digests as bytes compare them. */
static int
digest_order(const void *a, const void *b)
{
    return memcmp(PyBytes_AS_STRING(PyTuple_GET_ITEM(*(PyObject *const *)a, 2)),
                  PyBytes_AS_STRING(PyTuple_GET_ITEM(*(PyObject *const *)b, 2)), DIGEST_SIZE);
}

/* sort_by_digest(entries): sort a list of entries in place by their digests, the pure-Python
 * `entries.sort(key=itemgetter(2))` (engine._in_digest_order) without a Python comparison per
 * pair. Every item is checked first: nothing runs during the sort but memcmp, so the list
 * cannot change under it. Digests are a key's hash, unique within a listing: equal ones, if
 * any, may come in either order. */
static PyObject *
sort_by_digest(PyObject *module, PyObject *entries)
{
    if (!PyList_CheckExact(entries)) {
        PyErr_Format(PyExc_TypeError, "sort_by_digest: expected a list, got %.100s",
                     Py_TYPE(entries)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(entries);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 3 ||
            !PyBytes_Check(PyTuple_GET_ITEM(entry, 2)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 2)) != DIGEST_SIZE) {
            PyErr_Format(PyExc_TypeError,
                         "sort_by_digest: item %zd is not an entry with a %d-byte digest", i,
                         DIGEST_SIZE);
            return NULL;
        }
    }
    qsort(((PyListObject *)entries)->ob_item, (size_t)n, sizeof(PyObject *), digest_order);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(entry_type, file, directory, other): what the records are made of."},
    {"key_digest", key_digest_function, METH_O,
     "key_digest(key): keys.key_digest, 128 bits of BLAKE2b over the key's bytes."},
    {"encode_rows", encode_rows, METH_VARARGS,
     "encode_rows(out, entries, heads, empty_tail, suffix, ids, field_count, encode_key, "
     "entry_fields, metadata_field): binary COPY rows of entries, appended to out."},
    {"sort_by_digest", sort_by_digest, METH_O,
     "sort_by_digest(entries): sort a list of entries in place by their digests."},
    {NULL},
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "enumeration.connectors._scan",
    .m_doc = "The per-entry work of a directory listing and of its output rows, compiled.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__scan(void)
{
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&scan_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
