# cython: language_level=3
"""Compiled twins of telemetry's per-request work: the access log line's new fields and the trace context.

Optional, as aiohttp's and PyYAML's accelerators are: `pip install` builds this module when a C compiler
is there, and `mesh.proxy.log_line` and `mesh.proxy.tracing` use it when it imports (unless
WEIR_NO_EXTENSIONS is set); otherwise their pure-Python code runs, and it is the reference: the tests run
both and check that they write the same bytes. Only the common cases live here; anything unusual (B3
headers, a traceparent that is not exactly version 00's 55 lower-case characters) is handed back to the
Python code that handles every case.

Why compiled: with the access log and tracing on, these two pieces are about two thirds of telemetry's
cost per request in Python (`bench.instructions`). A batch's lines are written straight into the bytes
object the access log's writer sends: no piece is a Python object of its own, no str is joined and then
encoded, and the batch is not copied at the end (3,500 instructions a request fewer than str pieces
joined). Whether a line's cached fields are the previous line's is compared on borrowed references, str
and bytes by their text in C; request ids are checked for JSON-safe bytes with a table. And the 15 fields
of a line that repeat from one request to the next are still formatted once, in Python
(`LineFormat._rest`), so the line's format is defined in one place. Measured (2026-11-27, one sidecar,
`bench.instructions`): these and the xoshiro256** id pool saved 3,000 instructions a new root and 1,900 a
joined trace, a quarter of what telemetry cost.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.object cimport PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    # Borrowed references and exact type checks: `_same_rest` compares a dozen fields per line without a
    # reference count or a Python call per field.
    PyObject* PyTuple_GET_ITEM(object tuple, Py_ssize_t index)
    PyTypeObject* Py_TYPE(PyObject* o)
    bint PyUnicode_CheckExact(PyObject* o)
    bint PyBytes_CheckExact(PyObject* o)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* o)
    int PyUnicode_KIND(PyObject* o)
    void* PyUnicode_DATA(PyObject* o)
    Py_ssize_t Py_SIZE(PyObject* o)
    char* PyBytes_AS_STRING_RAW "PyBytes_AS_STRING" (PyObject* o)
    int _PyBytes_Resize(PyObject** bytes, Py_ssize_t size) except -1

import time
from json.encoder import encode_basestring_ascii as _quote

cdef object _gmtime = time.gmtime
cdef object _strftime = time.strftime
# Envoy truncates the start time to milliseconds; each one's text, with what follows it up to the duration.
cdef tuple _MILLIS = tuple([f'.{ms:03d}Z","duration":' for ms in range(1000)])
cdef bytes _ONE_TRACE = b"0" * 31 + b"1"  # ids are never all zero (W3C): a zero draw becomes 1
cdef bytes _ONE_SPAN = b"0" * 15 + b"1"
cdef Py_ssize_t TRACEPARENT_BYTES = 55  # 00-<32 hex>-<16 hex>-<2 hex>


# 1 for each byte JSON (ASCII-only, as json's encoder writes it) leaves as it is.
cdef unsigned char _JSON_SAFE[256]
for _byte in range(256):
    _JSON_SAFE[_byte] = 0x20 <= _byte <= 0x7E and _byte not in (0x22, 0x5C)


cdef inline bint _json_safe(const char* s, Py_ssize_t n):
    """No byte that JSON would escape (one table lookup a byte)."""
    cdef Py_ssize_t i
    for i in range(n):
        if not _JSON_SAFE[<unsigned char>s[i]]:
            return False
    return True


# The cache key's fields (LineFormat's key, in its order), as positions in an entry (log_line.ENTRY_FIELDS):
# method, path, status, flag, received, sent, endpoint (by id), cluster, authority, user_agent, remote,
# principal, direction. `format_lines` builds the key from the same positions.
KEY_FIELDS = (3, 4, 5, 6, 7, 8, 9, 10, 14, 16, 12, 11, 2)
cdef Py_ssize_t ENDPOINT = 9
cdef enum:
    COMPARED_COUNT = 12  # the key's fields but the endpoint
cdef Py_ssize_t _COMPARED[COMPARED_COUNT]
for _n, _position in enumerate([i for i in KEY_FIELDS if i != ENDPOINT]):
    _COMPARED[_n] = _position
# Times the C conversions take exactly (a C long, gmtime's range); others are formatted by the Python code.
cdef double MAX_WALL_S = 1e11
cdef double MAX_DURATION_S = 1e15


cdef inline bint _equal(PyObject* a, PyObject* b) except -1:
    """`a == b`, as the cache's dict compares keys: a str or bytes field of a new request is a new object with
    the text of the previous one's, compared here in C (what str and bytes' own == do); other types by ==."""
    if a == b:
        return True
    if Py_TYPE(a) == Py_TYPE(b):
        if PyUnicode_CheckExact(a):
            return (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) and PyUnicode_KIND(a) == PyUnicode_KIND(b)
                    and memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a)) == 0)
        if PyBytes_CheckExact(a):
            return Py_SIZE(a) == Py_SIZE(b) and memcmp(PyBytes_AS_STRING_RAW(a), PyBytes_AS_STRING_RAW(b), Py_SIZE(a)) == 0
    return PyObject_RichCompareBool(<object>a, <object>b, Py_EQ)


cdef inline bint _same_rest(tuple entry, tuple previous) except -1:
    """Whether an entry's cached fields are the previous entry's, as the cache's key compares them (the
    endpoint by identity, the rest by ==): a batch is mostly runs of such entries (one connection, one
    route), and comparing the fields costs less than building, hashing and looking up the key."""
    if PyTuple_GET_ITEM(entry, ENDPOINT) != PyTuple_GET_ITEM(previous, ENDPOINT):
        return False
    cdef Py_ssize_t n, i
    for n in range(COMPARED_COUNT):
        i = _COMPARED[n]
        if not _equal(PyTuple_GET_ITEM(entry, i), PyTuple_GET_ITEM(previous, i)):
            return False
    return True


cdef struct Out:
    # The batch's text, written straight into the bytes object `format_lines` returns: made for LINE_BYTES a
    # line, grown when a line is longer, cut to its size at the end (no copy of the batch).
    PyObject* bytes
    char* data
    Py_ssize_t size
    Py_ssize_t capacity

cdef Py_ssize_t LINE_BYTES = 640  # a line with a short path, user agent and principal is about 560


cdef int _reserve(Out* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t capacity = out.capacity or 4096
    while capacity < out.size + more:
        capacity *= 2
    cdef object fresh
    if out.bytes == NULL:
        fresh = PyBytes_FromStringAndSize(NULL, capacity)
        Py_INCREF(fresh)  # `out` owns one reference, released by `format_lines`
        out.bytes = <PyObject*>fresh
    else:
        _PyBytes_Resize(&out.bytes, capacity)  # on failure it frees the object and sets NULL
    out.data = PyBytes_AS_STRING_RAW(out.bytes)
    out.capacity = capacity
    return 0


cdef inline int _put(Out* out, const char* text, Py_ssize_t n) except -1:
    if out.size + n > out.capacity:
        _reserve(out, n)
    memcpy(out.data + out.size, text, n)
    out.size += n
    return 0


cdef inline int _put_bytes(Out* out, bytes data) except -1:
    return _put(out, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef inline int _put_str(Out* out, str text) except -1:
    """A str's UTF-8 (a compact ASCII str, as every JSON-escaped piece is, hands over its own buffer)."""
    cdef Py_ssize_t n
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(text, &n)
    return _put(out, utf8, n)


cdef inline int _put_long(Out* out, long value) except -1:
    cdef char digits[24]
    cdef int start = 24
    cdef unsigned long rest = <unsigned long>(-value) if value < 0 else <unsigned long>value
    while True:
        start -= 1
        digits[start] = <char>(48 + rest % 10)
        rest //= 10
        if rest == 0:
            break
    if value < 0:
        start -= 1
        digits[start] = b'-'
    return _put(out, digits + start, 24 - start)


cdef int _put_request_id(Out* out, object request_id) except -1:
    """`"…"` for a request id as the client sent it, escaped as `log_line` escapes it, or null."""
    if request_id is None:
        return _put(out, b"null", 4)
    cdef const char* text = PyBytes_AS_STRING(<bytes?>request_id)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(request_id)
    if not _json_safe(text, n):
        return _put_str(out, _quote(request_id.decode("latin-1")))
    _put(out, b'"', 1)
    _put(out, text, n)
    return _put(out, b'"', 1)


def format_lines(object line_format, list entries):
    """`LineFormat.lines` (mesh.proxy.log_line), the same bytes: the four new fields written here, the cached
    rest from the formatter's own cache, filled by its `_rest` on a miss; every piece copied once, into one
    buffer."""
    cdef dict cached = line_format._cached
    cdef object rest_of = line_format._rest
    cdef long second = line_format._second
    cdef str date = line_format._date
    cdef Out out
    out.bytes = NULL
    out.data = NULL
    out.size = out.capacity = 0
    cdef tuple entry, trace
    cdef tuple previous = None
    cdef double wall
    cdef long sec
    cdef object endpoint
    cdef str rest = None
    cdef bytes odd
    try:
        _reserve(&out, LINE_BYTES * len(entries))
        for entry in entries:
            wall = entry[0]
            if not (-MAX_WALL_S < wall < MAX_WALL_S and -MAX_DURATION_S < <double>entry[1] < MAX_DURATION_S):
                # Never from the proxy's clocks (NaN is caught too): the Python code's text, whatever it is.
                line_format._second, line_format._date = second, date
                odd = line_format.python_lines([entry])
                _put_bytes(&out, odd)
                second, date = line_format._second, line_format._date
                continue
            if previous is None or not _same_rest(entry, previous):
                endpoint = entry[ENDPOINT]
                # (method, path, status, flag, received, sent, id(endpoint), cluster, authority, user_agent,
                #  remote, principal, direction): LineFormat's key, from ENTRY_FIELDS' positions
                key = (entry[3], entry[4], entry[5], entry[6], entry[7], entry[8], id(endpoint), entry[10],
                       entry[14], entry[16], entry[12], entry[11], entry[2])
                rest = cached.get(key)
                if rest is None:
                    rest = rest_of(key, endpoint)
            previous = entry
            sec = <long>wall
            if sec != second:
                second = sec
                date = _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(sec))
            _put(&out, b'{"start_time":"', 15)
            _put_str(&out, date)
            _put_str(&out, <str>_MILLIS[<long>((wall - sec) * 1000)])
            _put_long(&out, <long>(<double>entry[1] * 1000))
            _put(&out, b',"request_id":', 14)
            _put_request_id(&out, entry[15])
            if entry[13]:
                trace = entry[13]
                _put(&out, b',"trace_id":"', 13)
                _put_bytes(&out, <bytes?>trace[0])
                _put(&out, b'",', 2)
            else:
                _put(&out, b',"trace_id":null,', 17)
            _put_str(&out, rest)
        line_format._second = second
        line_format._date = date
        _PyBytes_Resize(&out.bytes, out.size)
        lines = <object>out.bytes
        return lines
    finally:
        Py_XDECREF(out.bytes)


cdef inline bint _lower_hex(const char* s, Py_ssize_t n):
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = <unsigned char>s[i]
        if not ((0x30 <= c <= 0x39) or (0x61 <= c <= 0x66)):
            return False
    return True


cdef inline bint _odd_hex(unsigned char c):
    """Whether a lower-case hex digit's value is odd (the flags' sampled bit): a letter's code has the
    opposite parity of its value ('a' is 0x61 and ten)."""
    return (c & 1) == (1 if c <= 0x39 else 0)


cdef inline bint _zeros(const char* text, Py_ssize_t n):
    cdef Py_ssize_t i
    for i in range(n):
        if text[i] != b'0':
            return False
    return True


cdef inline bytes _id(const char* text, Py_ssize_t n):
    return PyBytes_FromStringAndSize(text, n)


cdef inline bytes _span_at(const char* span):
    """The span id of 16 hex characters at `span`: never all zero (W3C), a zero draw becomes 1."""
    return _ONE_SPAN if _zeros(span, 16) else _id(span, 16)


# Each byte's two hex digits: a pool is written two digits at a time.
cdef bytes _HEX_PAIRS_BYTES = b"".join([b"%02x" % byte for byte in range(256)])
cdef const char* _HEX_PAIRS = _HEX_PAIRS_BYTES


cdef inline uint64_t _rotl(uint64_t x, int k):
    return (x << k) | (x >> (64 - k))


cdef class TraceIds:
    """`Tracer.begin`'s two common cases (mesh.proxy.tracing): no trace header (a new root) and one valid
    `traceparent` (joined), with the pool of random hex the ids are cut from, so that an id is one bytes
    object made from the pool's characters (no slice, no intermediate text) and sampling is a comparison of
    bytes. Every other case goes to `general`, the pure-Python `begin`.

    The pool is filled by xoshiro256** (Blackman and Vigna; Envoy draws its ids from a fast non-cryptographic
    generator too), seeded once with 256 bits from `rng`: each 64-bit output is 16 hex digits, most
    significant first. A refill of 4,096 digits costs about 19,000 instructions (callgrind), where the Python
    code's `rng.randbytes(...).hex()` (Mersenne Twister through a big int, then hex) costs about 105,000: per
    new root, 230 instead of 1,260. So the two implementations draw different ids from one `rng`; the tests
    check this one against a Python xoshiro256** (`tests/mesh/proxy/xoshiro.py`) and the reference's
    published outputs."""

    cdef char* _pool
    cdef uint64_t _state[4]
    cdef Py_ssize_t _used
    cdef Py_ssize_t _pool_hex
    cdef bytes _sampled_below  # Tracer's threshold as ASCII: "g" above every id, "" below all, else 32 hex
    cdef object _general

    def __cinit__(self):
        self._pool = NULL

    def __init__(self, rng, Py_ssize_t pool_hex, bytes sampled_below, general):
        if pool_hex < 48 or pool_hex % 16:
            raise ValueError("the id pool holds a multiple of 16 hex digits, at least 48 (a root's ids)")
        free(self._pool)  # __init__ called again: the first pool is not leaked
        self._pool = <char*>malloc(pool_hex)
        if self._pool == NULL:
            raise MemoryError()
        seed = rng.getrandbits(256)
        for i in range(4):
            self._state[i] = (seed >> (64 * i)) & 0xFFFFFFFFFFFFFFFF
        self._pool_hex = pool_hex
        self._used = pool_hex
        self._sampled_below = sampled_below
        self._general = general

    def __dealloc__(self):
        free(self._pool)

    cdef inline uint64_t _next(self):
        """xoshiro256**'s next output (the reference C code, as published)."""
        cdef uint64_t* s = self._state
        cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
        cdef uint64_t t = s[1] << 17
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    cdef void _fill(self, char* out):
        """`pool_hex` digits of the generator's next outputs at `out`."""
        cdef Py_ssize_t at, pair
        cdef uint64_t word
        for at in range(0, self._pool_hex, 16):
            word = self._next()
            for pair in range(14, -2, -2):
                memcpy(out + at + pair, _HEX_PAIRS + 2 * (word & 255), 2)
                word >>= 8

    cdef const char* _take(self, Py_ssize_t n) except NULL:
        cdef Py_ssize_t used = self._used
        if used > self._pool_hex - n:
            self._fill(self._pool)
            used = 0
        self._used = used + n
        return self._pool + used

    cdef inline bytes _span(self):
        return _span_at(self._take(16))

    cdef inline bint _sampled(self, const char* trace_id):
        """`trace_id < sampled_below`, as the Python code compares the two bytes."""
        cdef Py_ssize_t below = PyBytes_GET_SIZE(self._sampled_below)
        cdef int order = memcmp(trace_id, PyBytes_AS_STRING(self._sampled_below), below if below < 32 else 32)
        return order < 0 or (order == 0 and below > 32)

    def span_id(self):
        return self._span()

    def draw(self):
        """A pool of fresh digits, for the Python code's own pool (`Tracer._refill`): the cases it handles
        draw from the same generator."""
        cdef bytes digits = PyBytes_FromStringAndSize(NULL, self._pool_hex)
        self._fill(PyBytes_AS_STRING(digits))
        return digits

    def begin(self, bytes traceparent, bint b3, list headers):
        cdef const char* s
        cdef const char* ids
        cdef bytes span_id
        if b3:
            return self._general(traceparent, b3, headers)
        if traceparent is None:  # a new root: its trace id and span id cut from one draw of 48
            ids = self._take(48)
            span_id = _span_at(ids + 32)
            if _zeros(ids, 32):
                return _ONE_TRACE, b"", self._sampled(PyBytes_AS_STRING(_ONE_TRACE)), span_id, False
            return _id(ids, 32), b"", self._sampled(ids), span_id, False
        s = PyBytes_AS_STRING(traceparent)
        if not (PyBytes_GET_SIZE(traceparent) == TRACEPARENT_BYTES and s[0] == b'0' and s[1] == b'0'
                and s[2] == b'-' and s[35] == b'-' and s[52] == b'-' and _lower_hex(s + 3, 32)
                and _lower_hex(s + 36, 16) and _lower_hex(s + 53, 2)):
            return self._general(traceparent, b3, headers)
        if _zeros(s + 3, 32) or _zeros(s + 36, 16):  # invalid: the general path starts a root
            return self._general(traceparent, b3, headers)
        return _id(s + 3, 32), _id(s + 36, 16), _odd_hex(<unsigned char>s[54]), self._span(), False


def traceparent_line(tuple span):
    """`traceparent: 00-<trace id>-<this hop's span id>-<flags>\\r\\n` for a span (tracing.Span), written
    into one buffer."""
    return _traceparent_line(span)


cdef bytes _traceparent_line(tuple span):
    cdef bytes trace = <bytes?>span[0]
    cdef bytes this_span = <bytes?>span[3]
    cdef const char* trace_id = PyBytes_AS_STRING(trace)
    cdef const char* span_id = PyBytes_AS_STRING(this_span)
    if PyBytes_GET_SIZE(trace) != 32 or PyBytes_GET_SIZE(this_span) != 16:
        raise ValueError("a span's ids are 32 and 16 hex characters")
    cdef bytes line = PyBytes_FromStringAndSize(NULL, 70)
    cdef char* out = PyBytes_AS_STRING(line)
    memcpy(out, b"traceparent: 00-", 16)
    memcpy(out + 16, trace_id, 32)
    out[48] = b'-'
    memcpy(out + 49, span_id, 16)
    memcpy(out + 65, b"-01\r\n" if span[2] else b"-00\r\n", 5)
    return line


def upstream_lines_with(general):
    """`tracing.upstream_lines`: the traceparent line written here, `general` (the pure-Python function)
    for a span whose caller used B3, which also gets the x-b3-* lines."""
    def upstream_lines(tuple span):
        if span[4]:
            return general(span)
        return _traceparent_line(span)  # a C call: no Python call from the closure
    return upstream_lines
