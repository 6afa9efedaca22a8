/* Stand-alone check of the engine without Python, for targets this machine cannot run natively
 * (the AArch64 NEON variant under qemu-aarch64): not part of the extension.
 *
 *   crosscheck MODEL.bin   runs every variant the CPU supports with 1 and 3 threads and compares
 *                          the outputs with the expected ones stored in the file; exit 0 when all
 *                          are bit-exact.
 *
 * MODEL.bin (little-endian), written by tests/test_fast_engine.py from pack.py's tuples:
 *   int32 is_cnv, in_bytes, in_words; int64 act_words, tmp_words; int32 n_layers;
 *   per layer: 15 int32 (the ints of the layer tuple), then for w, wx, thr, w8, w8q, thr16 an
 *   int64 byte count (-1 for none) and the bytes;
 *   int32 n; n input images; the numpy reference engine's n outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastbnn.h"

static FILE *in_file;

static void read_exact(void *p, size_t n)
{
    if (fread(p, 1, n, in_file) != n) {
        fprintf(stderr, "crosscheck: truncated model file\n");
        exit(2);
    }
}

static int32_t read_i32(void)
{
    int32_t v;
    read_exact(&v, 4);
    return v;
}

static int64_t read_i64(void)
{
    int64_t v;
    read_exact(&v, 8);
    return v;
}

static const void *read_array(void)
{
    int64_t n = read_i64();
    if (n < 0)
        return NULL;
    void *p = fb_aligned_calloc((size_t)(n + 7) / 8);
    if (!p)
        exit(2);
    read_exact(p, (size_t)n);
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 2 || !(in_file = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: crosscheck MODEL.bin\n");
        return 2;
    }
    fb_model m;
    memset(&m, 0, sizeof m);
    m.is_cnv = read_i32();
    m.in_bytes = read_i32();
    m.in_words = read_i32();
    m.act_words = (size_t)read_i64();
    m.tmp_words = (size_t)read_i64();
    m.n_layers = read_i32();
    m.layers = calloc((size_t)m.n_layers, sizeof(fb_layer));
    for (int i = 0; i < m.n_layers; i++) {
        fb_layer *L = &m.layers[i];
        int *ints[15] = {&L->in_kind, &L->out_kind, &L->bipolar, &L->w_tern, &L->conv, &L->pool, &L->in_dim,
                         &L->out_dim, &L->in_ppw, &L->out_ppw, &L->kw, &L->mh, &L->mw, &L->api, &L->in_ch};
        for (int k = 0; k < 15; k++)
            *ints[k] = read_i32();
        L->w = read_array();
        L->wx = read_array();
        L->thr = read_array();
        L->w8 = read_array();
        L->w8q = read_array();
        L->thr16 = read_array();
        L->ppseg = (3 * L->in_ch + 1) / 2; /* as module.c derives them */
        L->qpseg = (3 * L->in_ch + 3) / 4;
    }
    m.out_mh = m.layers[m.n_layers - 1].mh;
    const int n = read_i32();
    const size_t out_bytes = m.is_cnv ? (size_t)m.out_mh * 2 : 8;
    uint8_t *in = malloc((size_t)n * m.in_bytes), *want = malloc(n * out_bytes), *got = malloc(n * out_bytes);
    read_exact(in, (size_t)n * m.in_bytes);
    read_exact(want, n * out_bytes);
    int failures = 0;
    for (int i = 0; i < fb_isa_count(); i++) {
        const fb_isa *isa = fb_isa_at(i);
        if (!isa->supported())
            continue;
        for (int threads = 1; threads <= 3; threads += 2) {
            memset(got, 0xAB, n * out_bytes);
            int ok = fb_run(&m, isa, in, got, n, threads, 1) == 0 && memcmp(got, want, n * out_bytes) == 0;
            failures += !ok;
            printf("%s %s %d threads: %s\n", argv[1], isa->name, threads, ok ? "bit-exact" : "MISMATCH");
        }
    }
    return failures ? 1 : 0;
}
