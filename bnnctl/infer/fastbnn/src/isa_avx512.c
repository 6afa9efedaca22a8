/* AVX-512 variant: VPOPCNTQ counts 8 words in one instruction and VPTERNLOGQ forms
 * m & (s ^ w) in one, so every kernel step is load-xor-popcount-add on 512 bits.
 * Compiled with a target attribute and only called when the CPU reports the features. */
#include "isa_common.h"

#ifdef FB_X86_AVX512
#include <immintrin.h>

#define ISA avx512
#define ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vpopcntdq,popcnt,bmi2")))
#define RB 4
#define RB_TW2 2
#define NB 2
#define FLUSH_EVERY (1 << 30)

static int supported_avx512(void)
{
    __builtin_cpu_init();
    /* every CPU with VPOPCNTQ that matters (Ice Lake and later, Zen 4 and later) also has
     * BW, VL and VNNI */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
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

/* CNV layer 0 with VPDPBUSD: four u8 (q+128) x s8 products summed into int32 lanes, 16 rows per
 * register. The window's three rows are read in place as quads (no gather); the bytes past a
 * row's 3*in_ch meet zero weights. */
#define HAVE_FIX8_ROW 1
static ATTR void fix8_row_avx512(const fb_layer *L, const int8_t *img, int y, uint64_t *out)
{
    const int od = L->out_dim, C = L->in_ch, mh = L->mh, qp = L->qpseg;
    uint8_t rows[3][FB_FIX8_ROW_MAX];
    fb_fix8_rows(L, img, y, rows);
    for (int x = 0; x < od; x++) {
        uint64_t *o = out + (size_t)x * L->out_ppw;
        for (int g = 0; g < mh / 64; g++) {
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            __m512i s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512();
            for (int ky = 0; ky < 3; ky++) {
                const uint8_t *u = rows[ky] + x * C;
                for (int j = 0; j < qp; j++) {
                    int32_t quad;
                    memcpy(&quad, u + 4 * j, 4);
                    const __m512i a = _mm512_set1_epi32(quad);
                    const int8_t *wp = L->w8q + (((size_t)ky * qp + j) * mh + g * 64) * 4;
                    s0 = _mm512_dpbusd_epi32(s0, a, _mm512_loadu_si512((const void *)wp));
                    s1 = _mm512_dpbusd_epi32(s1, a, _mm512_loadu_si512((const void *)(wp + 64)));
                    s2 = _mm512_dpbusd_epi32(s2, a, _mm512_loadu_si512((const void *)(wp + 128)));
                    s3 = _mm512_dpbusd_epi32(s3, a, _mm512_loadu_si512((const void *)(wp + 192)));
                }
            }
            s0 = _mm512_add_epi32(s0, s0);
            s1 = _mm512_add_epi32(s1, s1);
            s2 = _mm512_add_epi32(s2, s2);
            s3 = _mm512_add_epi32(s3, s3);
            uint64_t f[2] = {0, 0};
            for (int a = 0; a < L->api; a++) {
                const int16_t *t = L->thr16 + a * mh + g * 64;
#define FB_T32(i) _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(t + 16 * (i))))
                f[a] = (uint64_t)_mm512_cmpgt_epi32_mask(s0, FB_T32(0)) |
                       ((uint64_t)_mm512_cmpgt_epi32_mask(s1, FB_T32(1)) << 16) |
                       ((uint64_t)_mm512_cmpgt_epi32_mask(s2, FB_T32(2)) << 32) |
                       ((uint64_t)_mm512_cmpgt_epi32_mask(s3, FB_T32(3)) << 48);
#undef FB_T32
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
