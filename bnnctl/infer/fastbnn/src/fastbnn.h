/* fastbnn: bit-packed XNOR-popcount engine for the BNN-PYNQ integer model (bnnctl issue 5).
 *
 * The arithmetic is the one of spec bnn-pynq-format.md §3.1 / §4.3; the numpy engine
 * (bnnctl/infer/numpy_engine.py) is the readable reference this code must match bit for bit.
 *
 * Data layout (chosen so that a 3x3 window is three runs of contiguous words, no im2col copy):
 *   activation map = [y][x][words of the pixel], channels LSB-first inside a word (spec §4.3).
 *   1-bit maps  : one word per 64 channels, bit = 1 for +1.
 *   2-bit maps  : two planes per 64 channels, interleaved (m, s): m = value != 0, s = value < 0,
 *                 s is always 0 where m is 0.
 *   dense input : an image is one "pixel" of K words (or K word pairs).
 * Packed weights are grouped in blocks of 8 output rows, word-major inside a block
 * ([block][k][8]), so that one vector load gives word k of 8 neighbouring rows.
 */
#ifndef FASTBNN_H
#define FASTBNN_H

#include <stddef.h>
#include <stdint.h>

/* Input arithmetic of a layer (spec §3.1). xnor and bipolar share the binary kernel. */
enum { IN_FIX8 = 0, IN_BIN = 1, IN_TERN = 2 };
/* What a layer writes: raw int16 scores (CNV layer 8), bits (1 threshold), 2-bit levels. */
enum { OUT_SCORE = 0, OUT_BIN = 1, OUT_TERN = 2 };

typedef struct {
    int in_kind, out_kind;
    int bipolar;      /* IN_BIN only: acc = agree - disagree instead of agree (LFC-W1A2 layer 0) */
    int w_tern;       /* 2-bit weights: two planes (nonzero, negative) per word */
    int conv, pool;
    int in_dim, out_dim;  /* spatial size (1 for dense layers) */
    int in_ppw, out_ppw;  /* words per pixel, all planes (dense: per image) */
    int kw;               /* words per plane in one window / input vector */
    int mh, mw, api, in_ch;
    const uint64_t *w;    /* [mh/8][kw][8] (1-bit) or [mh/8][kw][2][8] (2-bit: nonzero, negative) */
    const uint64_t *wx;   /* 2-bit weights equal to -2: the second -1 of -2 = -1 + -1, or NULL */
    const int64_t *thr;   /* [api][mh] hardware thresholds */
    /* fix8 (CNV layer 0): the window is read as three rows of 3*in_ch bytes (one per ky) straight
     * from the converted input rows, each row padded to whole pairs / quads with zero weights */
    const int8_t *w8;     /* [3][ppseg][mh][2]: weight pairs for u8 x s8 products (VPMADDUBSW) */
    const int8_t *w8q;    /* [3][qpseg][mh][4]: weight quads for VPDPBUSD (AVX-512 VNNI) */
    const int16_t *thr16; /* [api][mh] thresholds against 2*sum(w*(q+128)), see pack.py */
    int ppseg, qpseg;     /* ceil(3*in_ch/2), ceil(3*in_ch/4) */
} fb_layer;

typedef struct {
    int n_layers;
    fb_layer *layers;
    int is_cnv;
    int in_bytes;       /* bytes of one input image */
    int in_words;       /* LFC: packed input words per image */
    size_t act_words;   /* words reserved per image in each activation buffer */
    size_t tmp_words;   /* words of the two-row buffer of a pooled layer */
    int out_mh;         /* rows of the last layer */
    void **owned;       /* aligned allocations to free */
    int n_owned;
} fb_model;

/* One instruction-set variant of the layer code (layers.inc compiled for one target). */
typedef struct {
    const char *name;
    int (*supported)(void);
    /* Conv layer: output row `unit` (or pooled row when the layer pools) of one image. */
    void (*conv_unit)(const fb_layer *L, const void *in_img, uint64_t *out_img, int unit, uint64_t *tmp);
    /* Dense layer: rows of B images (stride words apart), output rows [c0, c1). */
    void (*dense)(const fb_layer *L, const uint64_t *in, uint64_t *out, ptrdiff_t stride, int B,
                  int c0, int c1);
    /* Microbenchmark: the binary kernel on L1-resident data; returns a checksum. */
    uint64_t (*bench)(const uint64_t *x, const uint64_t *w, int kw, long reps, uint64_t *macs);
} fb_isa;

int fb_isa_count(void);                      /* variants compiled in, best first */
const fb_isa *fb_isa_at(int i);
const fb_isa *fb_isa_find(const char *name); /* supported by this CPU; NULL name: the best */

/* inputs: CNV int8 (n, 32, 32, 3) codes, LFC uint8 (n, in_bytes) bits; outputs: CNV int16
 * (n, out_mh), LFC uint64 (n,). With fewer images than threads, `split` says whether one
 * image's layers are shared by several threads: 1 always, 0 never, -1 when CPUs are idle.
 * Returns 0, or -1 when memory runs out. */
int fb_run(const fb_model *m, const fb_isa *isa, const void *in, void *out, int n, int threads, int split);
uint64_t fb_bench(const fb_isa *isa, int kw, long reps, int threads, uint64_t *macs);

void *fb_aligned_calloc(size_t words);
void fb_aligned_free(void *p);

#endif
