/* AVX2 variant: 8 words are two 256-bit registers; popcounts are per byte (nibble lookup with
 * VPSHUFB), accumulated as bytes and summed into 64-bit lanes with VPSADBW every 31 words
 * (31 * 8 = 248 fits a byte). */
#include "isa_common.h"

#ifdef FB_X86
#include <immintrin.h>

#define ISA avx2
#define ATTR __attribute__((target("avx2,popcnt,bmi2")))
#define RB 2
#define RB_TW2 1
#define NB 1
#define FLUSH_EVERY 31

static int supported_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

typedef struct { __m256i a, b; } VW;
typedef VW CNT;
typedef VW TOT;

#define AVX2_INL static inline __attribute__((always_inline)) ATTR

AVX2_INL __m256i pc8(__m256i v)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}
AVX2_INL VW vw_load(const uint64_t *p)
{
    VW r = {_mm256_loadu_si256((const __m256i *)p), _mm256_loadu_si256((const __m256i *)(p + 4))};
    return r;
}
AVX2_INL VW vw_bcast(uint64_t x)
{
    VW r = {_mm256_set1_epi64x((long long)x), _mm256_set1_epi64x((long long)x)};
    return r;
}
AVX2_INL VW vw_and(VW x, VW y)
{
    VW r = {_mm256_and_si256(x.a, y.a), _mm256_and_si256(x.b, y.b)};
    return r;
}
AVX2_INL CNT cnt_zero(void)
{
    CNT r = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    return r;
}
AVX2_INL CNT cnt_pop(CNT c, VW v)
{
    CNT r = {_mm256_add_epi8(c.a, pc8(v.a)), _mm256_add_epi8(c.b, pc8(v.b))};
    return r;
}
AVX2_INL CNT cnt_pop_xor(CNT c, VW x, VW y)
{
    CNT r = {_mm256_add_epi8(c.a, pc8(_mm256_xor_si256(x.a, y.a))),
             _mm256_add_epi8(c.b, pc8(_mm256_xor_si256(x.b, y.b)))};
    return r;
}
AVX2_INL CNT cnt_pop_andxor(CNT c, VW m, VW s, VW w)
{
    CNT r = {_mm256_add_epi8(c.a, pc8(_mm256_and_si256(m.a, _mm256_xor_si256(s.a, w.a)))),
             _mm256_add_epi8(c.b, pc8(_mm256_and_si256(m.b, _mm256_xor_si256(s.b, w.b))))};
    return r;
}
AVX2_INL TOT tot_zero(void) { return cnt_zero(); }
AVX2_INL TOT tot_flush(TOT t, CNT c)
{
    const __m256i z = _mm256_setzero_si256();
    TOT r = {_mm256_add_epi64(t.a, _mm256_sad_epu8(c.a, z)), _mm256_add_epi64(t.b, _mm256_sad_epu8(c.b, z))};
    return r;
}
AVX2_INL TOT tot_set1(int64_t v)
{
    TOT r = {_mm256_set1_epi64x(v), _mm256_set1_epi64x(v)};
    return r;
}
AVX2_INL TOT tot_sub_shl(TOT base, TOT d, int sh)
{
    TOT r = {_mm256_sub_epi64(base.a, sh ? _mm256_add_epi64(d.a, d.a) : d.a),
             _mm256_sub_epi64(base.b, sh ? _mm256_add_epi64(d.b, d.b) : d.b)};
    return r;
}
AVX2_INL unsigned tot_gt_mask(TOT x, const int64_t *thr)
{
    __m256i lo = _mm256_cmpgt_epi64(x.a, _mm256_loadu_si256((const __m256i *)thr));
    __m256i hi = _mm256_cmpgt_epi64(x.b, _mm256_loadu_si256((const __m256i *)(thr + 4)));
    return (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(lo)) |
           ((unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(hi)) << 4);
}
AVX2_INL void tot_store(int64_t *p, TOT t)
{
    _mm256_storeu_si256((__m256i *)p, t.a);
    _mm256_storeu_si256((__m256i *)(p + 4), t.b);
}

/* 16 int16 comparisons -> 16 mask bits in row order (PACKSSWB works per 128-bit lane, so the
 * two halves are put back in order before VPMOVMSKB). */
AVX2_INL uint32_t gt16_mask(__m256i s0, __m256i s1, const int16_t *t)
{
    __m256i c0 = _mm256_cmpgt_epi16(s0, _mm256_loadu_si256((const __m256i *)t));
    __m256i c1 = _mm256_cmpgt_epi16(s1, _mm256_loadu_si256((const __m256i *)(t + 16)));
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(c0, c1), 0xD8);
    return (uint32_t)_mm256_movemask_epi8(packed);
}

/* CNV layer 0 with VPMADDUBSW: u8 (q+128) x s8 weight pairs -> int16, 16 rows per register.
 * 27 nonzero terms of |w| <= 2 and q+128 <= 255: |S| <= 13,770 and a pair sum stays within
 * 1,020, so int16 is exact (no saturation), and pack.py clamped the thresholds to int16 without
 * changing any test. The window rows are read in place as pairs (no gather). */
#define HAVE_FIX8_ROW 1
static ATTR void fix8_row_avx2(const fb_layer *L, const int8_t *img, int y, uint64_t *out)
{
    const int od = L->out_dim, C = L->in_ch, mh = L->mh, pp = L->ppseg;
    uint8_t rows[3][FB_FIX8_ROW_MAX];
    fb_fix8_rows(L, img, y, rows);
    for (int x = 0; x < od; x++) {
        uint64_t *o = out + (size_t)x * L->out_ppw;
        for (int g = 0; g < mh / 64; g++) {
            __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                            _mm256_setzero_si256()};
            for (int ky = 0; ky < 3; ky++) {
                const uint8_t *u = rows[ky] + x * C;
                for (int j = 0; j < pp; j++) {
                    uint16_t pair;
                    memcpy(&pair, u + 2 * j, 2);
                    const __m256i a = _mm256_set1_epi16((short)pair);
                    const int8_t *wp = L->w8 + (((size_t)ky * pp + j) * mh + g * 64) * 2;
                    for (int v = 0; v < 4; v++)
                        s[v] = _mm256_add_epi16(s[v], _mm256_maddubs_epi16(a, _mm256_loadu_si256((const __m256i *)(wp + 32 * v))));
                }
            }
            for (int v = 0; v < 4; v++)
                s[v] = _mm256_add_epi16(s[v], s[v]);
            uint64_t f[2] = {0, 0};
            for (int a = 0; a < L->api; a++) {
                const int16_t *t = L->thr16 + a * mh + g * 64;
                f[a] = (uint64_t)gt16_mask(s[0], s[1], t) | ((uint64_t)gt16_mask(s[2], s[3], t + 32) << 32);
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
