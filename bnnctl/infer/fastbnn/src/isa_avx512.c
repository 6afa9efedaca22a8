/* AVX-512 variant: VPOPCNTQ counts 8 words in one instruction and VPTERNLOGQ forms
 * m & (s ^ w) in one, so every kernel step is load-xor-popcount-add on 512 bits.
 * Compiled with a target attribute and only called when the CPU reports the features. */
#include "isa_common.h"

#ifdef FB_X86
#include <immintrin.h>

#define ISA avx512
#define ATTR __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,popcnt,bmi2")))
#define RB 4
#define NB 2
#define FLUSH_EVERY (1 << 30)

static int supported_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("popcnt");
}

typedef __m512i VW;
typedef __m512i CNT;
typedef __m512i TOT;

static inline __attribute__((always_inline)) ATTR VW vw_load(const uint64_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline __attribute__((always_inline)) ATTR VW vw_bcast(uint64_t x) { return _mm512_set1_epi64((long long)x); }
static inline __attribute__((always_inline)) ATTR VW vw_and(VW a, VW b) { return _mm512_and_si512(a, b); }
static inline __attribute__((always_inline)) ATTR CNT cnt_zero(void) { return _mm512_setzero_si512(); }
static inline __attribute__((always_inline)) ATTR CNT cnt_pop(CNT c, VW v) { return _mm512_add_epi64(c, _mm512_popcnt_epi64(v)); }
static inline __attribute__((always_inline)) ATTR CNT cnt_pop_xor(CNT c, VW a, VW b)
{
    return _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_xor_si512(a, b)));
}
/* truth table of a & (b ^ c): bits 5 (a=1,b=0,c=1) and 6 (a=1,b=1,c=0) -> 0x60 */
static inline __attribute__((always_inline)) ATTR CNT cnt_pop_andxor(CNT c, VW m, VW s, VW w)
{
    return _mm512_add_epi64(c, _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(m, s, w, 0x60)));
}
static inline __attribute__((always_inline)) ATTR TOT tot_zero(void) { return _mm512_setzero_si512(); }
static inline __attribute__((always_inline)) ATTR TOT tot_flush(TOT t, CNT c) { return _mm512_add_epi64(t, c); }
static inline __attribute__((always_inline)) ATTR TOT tot_set1(int64_t v) { return _mm512_set1_epi64(v); }
static inline __attribute__((always_inline)) ATTR TOT tot_sub_shl(TOT base, TOT d, int sh)
{
    return _mm512_sub_epi64(base, sh ? _mm512_add_epi64(d, d) : d);
}
static inline __attribute__((always_inline)) ATTR unsigned tot_gt_mask(TOT a, const int64_t *thr)
{
    return (unsigned)_mm512_cmpgt_epi64_mask(a, _mm512_loadu_si512((const void *)thr));
}
static inline __attribute__((always_inline)) ATTR void tot_store(int64_t *p, TOT t) { _mm512_storeu_si512((void *)p, t); }

/* CNV layer 0 with VPMADDUBSW: u8 (q+128) x s8 weight pairs -> int16, 32 rows per register.
 * The sums stay below 14,280 in magnitude (27 terms of at most 255*2), so int16 is exact, and
 * the thresholds were clamped to int16 by pack.py without changing any comparison. */
#define HAVE_FIX8_ROW 1
static ATTR void fix8_row_avx512(const fb_layer *L, const int8_t *img, int y, uint64_t *out)
{
    const int od = L->out_dim, id = L->in_dim, C = L->in_ch, mh = L->mh, np = L->pairs;
    uint8_t u[64] __attribute__((aligned(16))) = {0};
    for (int x = 0; x < od; x++) {
        int k = 0;
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++)
                for (int c = 0; c < C; c++)
                    u[k++] = (uint8_t)(img[((y + ky) * id + x + kx) * C + c] ^ 0x80);
        uint64_t *o = out + (size_t)x * L->out_ppw;
        for (int g = 0; g < mh / 64; g++) {
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int p = 0; p < np; p++) {
                uint16_t pair = (uint16_t)(u[2 * p] | (u[2 * p + 1] << 8));
                __m512i a = _mm512_set1_epi16((short)pair);
                const int8_t *wp = L->w8 + ((size_t)p * mh + g * 64) * 2;
                s0 = _mm512_add_epi16(s0, _mm512_maddubs_epi16(a, _mm512_loadu_si512((const void *)wp)));
                s1 = _mm512_add_epi16(s1, _mm512_maddubs_epi16(a, _mm512_loadu_si512((const void *)(wp + 64))));
            }
            s0 = _mm512_add_epi16(s0, s0);
            s1 = _mm512_add_epi16(s1, s1);
            uint64_t f[2] = {0, 0};
            for (int a = 0; a < L->api; a++) {
                const int16_t *t = L->thr16 + a * mh + g * 64;
                uint64_t lo = _mm512_cmpgt_epi16_mask(s0, _mm512_loadu_si512((const void *)t));
                uint64_t hi = _mm512_cmpgt_epi16_mask(s1, _mm512_loadu_si512((const void *)(t + 32)));
                f[a] = lo | (hi << 32);
            }
            if (L->out_kind == OUT_BIN) {
                o[g] = f[0];
            } else {
                o[2 * g] = ~(f[0] ^ f[1]);
                o[2 * g + 1] = ~(f[0] | f[1]);
            }
        }
    }
}

#include "layers.inc"
#else
typedef int fb_no_variant_here; /* an empty translation unit is not valid C */
#endif
