/* Python bindings of the fastbnn engine: bnnctl.infer.fastbnn._fastbnn.
 *
 * build_model(header, layers) -> capsule   (copies the packed arrays into aligned memory)
 * run(model, inputs, outputs, n, threads, isa, split)  (releases the GIL while it computes)
 * isas() -> names supported by this CPU, best first;  bench(isa, kw, reps, threads)
 * The packing itself is done once in Python (pack.py); see fastbnn.h for the layouts. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "fastbnn.h"

#define CAPSULE_NAME "bnnctl.fastbnn.model"

static void model_free(fb_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned; i++)
        fb_aligned_free(m->owned[i]);
    PyMem_Free(m->owned);
    PyMem_Free(m->layers);
    PyMem_Free(m);
}

static void capsule_destructor(PyObject *capsule)
{
    model_free((fb_model *)PyCapsule_GetPointer(capsule, CAPSULE_NAME));
}

/* None -> NULL; a C-contiguous buffer of exactly `expect` bytes -> aligned copy. */
static int copy_array(fb_model *m, PyObject *obj, Py_ssize_t expect, const void **dst, const char *what)
{
    *dst = NULL;
    if (obj == Py_None) {
        if (expect > 0) {
            PyErr_Format(PyExc_ValueError, "fastbnn: %s missing", what);
            return -1;
        }
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view.len != expect) {
        PyErr_Format(PyExc_ValueError, "fastbnn: %s has %zd bytes, expected %zd", what, view.len, expect);
        PyBuffer_Release(&view);
        return -1;
    }
    void *p = fb_aligned_calloc((size_t)(expect + 7) / 8);
    if (!p) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(p, view.buf, (size_t)expect);
    PyBuffer_Release(&view);
    m->owned[m->n_owned++] = p;
    *dst = p;
    return 0;
}

static int parse_layer(fb_model *m, PyObject *t, fb_layer *L)
{
    PyObject *w, *wx, *thr, *w8, *w8q, *thr16;
    if (!PyArg_ParseTuple(t, "iiiiiiiiiiiiiiiOOOOOO;fastbnn: bad layer tuple", &L->in_kind, &L->out_kind,
                          &L->bipolar, &L->w_tern, &L->conv, &L->pool, &L->in_dim, &L->out_dim,
                          &L->in_ppw, &L->out_ppw, &L->kw, &L->mh, &L->mw, &L->api, &L->in_ch, &w, &wx,
                          &thr, &w8, &w8q, &thr16))
        return -1;
    if (L->mh <= 0 || L->mh % 64 || L->api < 0 || L->api > 2 || L->kw <= 0 ||
        (L->out_kind == OUT_BIN && L->api != 1) || (L->out_kind == OUT_TERN && L->api != 2) ||
        (L->out_kind == OUT_SCORE && L->api != 0)) {
        PyErr_SetString(PyExc_ValueError, "fastbnn: inconsistent layer geometry");
        return -1;
    }
    Py_ssize_t planes = L->w_tern ? 2 : 1;
    if (L->in_kind == IN_FIX8) {
        L->ppseg = (3 * L->in_ch + 1) / 2;
        L->qpseg = (3 * L->in_ch + 3) / 4;
        if (!L->conv || L->in_ch < 1 || 3 * L->in_ch > 12 || L->out_kind == OUT_SCORE ||
            (Py_ssize_t)L->in_dim * L->in_ch > 1024) {
            PyErr_SetString(PyExc_ValueError, "fastbnn: unsupported first layer");
            return -1;
        }
        if (copy_array(m, w8, (Py_ssize_t)3 * L->ppseg * L->mh * 2, (const void **)&L->w8, "w8") < 0 ||
            copy_array(m, w8q, (Py_ssize_t)3 * L->qpseg * L->mh * 4, (const void **)&L->w8q, "w8q") < 0 ||
            copy_array(m, thr16, (Py_ssize_t)L->api * L->mh * 2, (const void **)&L->thr16, "thr16") < 0)
            return -1;
    } else {
        Py_ssize_t wbytes = (Py_ssize_t)L->mh * L->kw * planes * 8;
        if (copy_array(m, w, wbytes, (const void **)&L->w, "weights") < 0 ||
            copy_array(m, wx, wx == Py_None ? 0 : wbytes, (const void **)&L->wx, "extra weights") < 0 ||
            copy_array(m, thr, (Py_ssize_t)L->api * L->mh * 8, (const void **)&L->thr, "thresholds") < 0)
            return -1;
    }
    return 0;
}

static PyObject *py_build_model(PyObject *self, PyObject *args)
{
    (void)self;
    int is_cnv, in_bytes, in_words, out_mh;
    Py_ssize_t act_words, tmp_words;
    PyObject *layers;
    if (!PyArg_ParseTuple(args, "iiinnO!", &is_cnv, &in_bytes, &in_words, &act_words, &tmp_words,
                          &PyList_Type, &layers))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(layers);
    if (n < 1 || n > 64) {
        PyErr_SetString(PyExc_ValueError, "fastbnn: 1 to 64 layers expected");
        return NULL;
    }
    fb_model *m = PyMem_Calloc(1, sizeof *m);
    if (!m)
        return PyErr_NoMemory();
    m->layers = PyMem_Calloc((size_t)n, sizeof *m->layers);
    m->owned = PyMem_Calloc((size_t)n * 6, sizeof *m->owned);
    if (!m->layers || !m->owned) {
        model_free(m);
        return PyErr_NoMemory();
    }
    m->n_layers = (int)n;
    m->is_cnv = is_cnv;
    m->in_bytes = in_bytes;
    m->in_words = in_words;
    m->act_words = (size_t)act_words;
    m->tmp_words = (size_t)tmp_words;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_layer(m, PyList_GET_ITEM(layers, i), &m->layers[i]) < 0) {
            model_free(m);
            return NULL;
        }
    }
    out_mh = m->layers[n - 1].mh;
    m->out_mh = out_mh;
    PyObject *capsule = PyCapsule_New(m, CAPSULE_NAME, capsule_destructor);
    if (!capsule)
        model_free(m);
    return capsule;
}

static const fb_isa *isa_arg(const char *name)
{
    const fb_isa *isa = fb_isa_find(name);
    if (!isa)
        PyErr_Format(PyExc_ValueError, "fastbnn: instruction set '%s' is not available on this CPU", name ? name : "");
    return isa;
}

static PyObject *py_run(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *in_obj, *out_obj;
    int n, threads, split = -1;
    const char *isa_name = NULL;
    if (!PyArg_ParseTuple(args, "OOOii|zi", &capsule, &in_obj, &out_obj, &n, &threads, &isa_name, &split))
        return NULL;
    fb_model *m = (fb_model *)PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (!m)
        return NULL;
    const fb_isa *isa = isa_arg(isa_name);
    if (!isa)
        return NULL;
    Py_buffer in, out;
    if (PyObject_GetBuffer(in_obj, &in, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const Py_ssize_t out_bytes = m->is_cnv ? (Py_ssize_t)m->out_mh * 2 : 8;
    int rc = 0;
    if (n < 0 || in.len != (Py_ssize_t)n * m->in_bytes || out.len != (Py_ssize_t)n * out_bytes) {
        PyErr_SetString(PyExc_ValueError, "fastbnn: input/output sizes do not match the model");
        rc = -2;
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = fb_run(m, isa, in.buf, out.buf, n, threads, split);
        Py_END_ALLOW_THREADS
        if (rc < 0)
            PyErr_NoMemory();
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (rc < 0)
        return NULL;
    return PyUnicode_FromString(isa->name);
}

static PyObject *py_isas(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    PyObject *names = PyList_New(0);
    if (!names)
        return NULL;
    for (int i = 0; i < fb_isa_count(); i++) {
        const fb_isa *isa = fb_isa_at(i);
        if (!isa->supported())
            continue;
        PyObject *s = PyUnicode_FromString(isa->name);
        if (!s || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(s);
    }
    return names;
}

static PyObject *py_bench(PyObject *self, PyObject *args)
{
    (void)self;
    const char *isa_name;
    int kw, threads;
    long reps;
    if (!PyArg_ParseTuple(args, "zili", &isa_name, &kw, &reps, &threads))
        return NULL;
    const fb_isa *isa = isa_arg(isa_name);
    if (!isa)
        return NULL;
    if (kw < 1 || kw > 4096 || reps < 1) {
        PyErr_SetString(PyExc_ValueError, "fastbnn: bad bench arguments");
        return NULL;
    }
    uint64_t macs = 0, sum;
    Py_BEGIN_ALLOW_THREADS
    sum = fb_bench(isa, kw, reps, threads, &macs);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("KK", (unsigned long long)macs, (unsigned long long)sum);
}

static PyMethodDef methods[] = {
    {"build_model", py_build_model, METH_VARARGS, "Copy a packed model into the engine."},
    {"run", py_run, METH_VARARGS, "Run a model on a batch; returns the instruction set used."},
    {"isas", py_isas, METH_NOARGS, "Instruction-set variants this CPU supports, best first."},
    {"bench", py_bench, METH_VARARGS, "Inner XNOR-popcount kernel on L1 data: (binary MACs, checksum)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastbnn", "Bit-packed BNN engine.", -1, methods,
                                       NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastbnn(void) { return PyModule_Create(&moduledef); }
