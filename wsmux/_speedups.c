/*
 * wsmux's optional C accelerator: two steps every small message takes on
 * wsmux's frame path, in C (compressed messages, close frames and frames
 * of 64 KiB and more take the Python path).
 *
 *   cut(data, max_message, max_frame, validate)
 *       Cut the whole, masked, unfragmented, uncompressed text and binary
 *       frames at the head of data: unmask each, check a text message's
 *       UTF-8 when validate is true.  Returns (messages, end, octets): a
 *       list of (payload, is_binary, length) tuples, where the cut stopped,
 *       and the payload octets cut.  It stops, cutting nothing more, at the
 *       first frame it does not take whole: not masked, not a whole text or
 *       binary frame (a fragment, a control or compressed frame), a 64-bit
 *       length or a 16-bit one that is not minimal, a frame not all in data
 *       yet, one past max_message or max_frame (when those are above 0),
 *       or a text message that is not UTF-8.  Autobahn's frame path takes
 *       it from there and fails what needs failing, with its own words.
 *
 *   frame(first_byte, payload)
 *       An unmasked frame (server to client): its header and payload in
 *       one bytes object.
 *
 * The Python path does the same (wsmux/_frames.py: cut_in_python,
 * frame_in_python); the tests check that the two agree, and the suite runs
 * with each.  Built when the machine has a C compiler and Python's headers
 * (setup.py: an optional extension); WSMUX_PURE_PYTHON=1 leaves it unused.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* XOR n bytes of in with the 4-byte mask repeated, into out (RFC 6455 5.3). */
static void
unmask_into(unsigned char *out, const unsigned char *in, Py_ssize_t n,
            const unsigned char *mask)
{
    uint32_t m32;
    uint64_t m64, v;
    Py_ssize_t i = 0;

    memcpy(&m32, mask, 4);
    /* The mask's bytes twice, in memory order, whatever the byte order. */
    memcpy(&m64, &m32, 4);
    memcpy((unsigned char *)&m64 + 4, &m32, 4);
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, in + i, 8);
        v ^= m64;
        memcpy(out + i, &v, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ mask[i & 3];
}

/*
 * Whether s is well-formed UTF-8 (RFC 3629): no overlong forms, no
 * surrogates, nothing past U+10FFFF, nothing cut short.  What Python's
 * strict "utf-8" codec accepts, and RFC 6455 8.1 asks for.
 */
static int
utf8_valid(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    uint64_t v;
    unsigned char c, c1;

    while (i < n) {
        if (i + 8 <= n) {
            memcpy(&v, s + i, 8);
            if (!(v & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        c = s[i];
        if (c < 0x80) {
            i += 1;
        } else if (c < 0xC2) {
            return 0; /* a continuation byte, or a 2-byte overlong form */
        } else if (c < 0xE0) {
            if (n - i < 2 || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
        } else if (c < 0xF0) {
            if (n - i < 3)
                return 0;
            c1 = s[i + 1];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F))
                return 0; /* overlong, or a surrogate */
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return 0;
            i += 3;
        } else if (c < 0xF5) {
            if (n - i < 4)
                return 0;
            c1 = s[i + 1];
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                return 0; /* overlong, or past U+10FFFF */
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/*
 * A limit from Python (an int, or a float a handler set): 0 or below is
 * none, and so is one past what fits.  A length passes a float limit
 * exactly when it passes its floor, as Python compares them.
 */
static int
as_limit(PyObject *o, long long *limit)
{
    int overflow = 0;
    long long value;
    double d;

    if (PyFloat_Check(o)) {
        d = PyFloat_AS_DOUBLE(o);
        /* Not above 0 (NaN included: 0 < nan is false), or past what fits:
         * none; else its floor (0 for one below 1: only empty payloads pass). */
        *limit = (!(d > 0) || d >= 9.0e18) ? LLONG_MAX : (long long)d;
        return 0;
    }
    value = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow > 0 || value <= 0)
        value = LLONG_MAX;
    *limit = value;
    return 0;
}

static PyObject *
cut(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    const unsigned char *data;
    Py_ssize_t end, i = 0, start, length, octets = 0;
    long long max_message, max_frame;
    int validate;
    unsigned char b0, b1;
    PyObject *messages = NULL, *payload, *flag, *size, *item, *result = NULL;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "cut(data, max_message, max_frame, validate) takes 4 arguments");
        return NULL;
    }
    if (as_limit(args[1], &max_message) < 0 || as_limit(args[2], &max_frame) < 0)
        return NULL;
    validate = PyObject_IsTrue(args[3]);
    if (validate < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    data = view.buf;
    end = view.len;
    messages = PyList_New(0);
    if (messages == NULL)
        goto done;
    while (end - i >= 6) {
        b0 = data[i];
        b1 = data[i + 1];
        if (b1 < 0x80 || (b0 != 0x81 && b0 != 0x82))
            break; /* not masked, or not a whole text or binary frame */
        length = b1 & 0x7F;
        if (length < 126) {
            start = i + 6;
        } else if (length == 126) {
            if (end - i < 8)
                break;
            length = ((Py_ssize_t)data[i + 2] << 8) | data[i + 3];
            if (length < 126)
                break; /* not minimal */
            start = i + 8;
        } else {
            break; /* 64-bit lengths: big frames take another path */
        }
        if (length > end - start)
            break; /* not all here yet */
        if (length > max_message || length > max_frame)
            break;
        payload = PyBytes_FromStringAndSize(NULL, length);
        if (payload == NULL)
            goto done;
        unmask_into((unsigned char *)PyBytes_AS_STRING(payload), data + start, length,
                    data + start - 4);
        if (b0 == 0x81 && validate &&
            !utf8_valid((const unsigned char *)PyBytes_AS_STRING(payload), length)) {
            Py_DECREF(payload);
            break;
        }
        item = PyTuple_New(3);
        if (item == NULL) {
            Py_DECREF(payload);
            goto done;
        }
        PyTuple_SET_ITEM(item, 0, payload);
        flag = b0 == 0x82 ? Py_True : Py_False;
        Py_INCREF(flag);
        PyTuple_SET_ITEM(item, 1, flag);
        size = PyLong_FromSsize_t(length);
        if (size == NULL) {
            Py_DECREF(item);
            goto done;
        }
        PyTuple_SET_ITEM(item, 2, size);
        if (PyList_Append(messages, item) < 0) {
            Py_DECREF(item);
            goto done;
        }
        Py_DECREF(item);
        octets += length;
        i = start + length;
    }
    result = Py_BuildValue("(Onn)", messages, i, octets);
done:
    Py_XDECREF(messages);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long first;
    Py_buffer view;
    Py_ssize_t length, size;
    unsigned char *out;
    PyObject *result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frame(first_byte, payload) takes 2 arguments");
        return NULL;
    }
    first = PyLong_AsLong(args[0]);
    if (first == -1 && PyErr_Occurred())
        return NULL;
    if (first < 0 || first > 255) {
        PyErr_SetString(PyExc_ValueError, "first_byte must be in range(256)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    length = view.len;
    size = length < 126 ? 2 : length < 65536 ? 4 : 10;
    result = PyBytes_FromStringAndSize(NULL, size + length);
    if (result != NULL) {
        out = (unsigned char *)PyBytes_AS_STRING(result);
        out[0] = (unsigned char)first;
        if (size == 2) {
            out[1] = (unsigned char)length;
        } else if (size == 4) {
            out[1] = 126;
            out[2] = (unsigned char)(length >> 8);
            out[3] = (unsigned char)length;
        } else {
            out[1] = 127;
            for (int k = 0; k < 8; k++)
                out[2 + k] = (unsigned char)((unsigned long long)length >> (56 - 8 * k));
        }
        memcpy(out + size, view.buf, length);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"cut", (PyCFunction)(void (*)(void))cut, METH_FASTCALL,
     "cut(data, max_message, max_frame, validate) -> (messages, end, octets)"},
    {"frame", (PyCFunction)(void (*)(void))frame, METH_FASTCALL,
     "frame(first_byte, payload) -> bytes: an unmasked frame"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "wsmux._speedups",
    "wsmux's optional C accelerator for its frame path (see wsmux/_frames.py).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
