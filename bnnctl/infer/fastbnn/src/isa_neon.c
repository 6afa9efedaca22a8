/* AArch64 NEON variant (boards such as the Ultra96's Cortex-A53): 8 words are four 128-bit
 * registers; CNT counts bits per byte, bytes are accumulated and widened to 64-bit lanes with
 * pairwise adds every 31 words. NEON is part of the AArch64 base, so no run-time check. */
#include "isa_common.h"

#ifdef FB_NEON
#include <arm_neon.h>

#define ISA neon
#define ATTR
#define RB 2
#define RB_TW2 1
#define NB 1
#define FLUSH_EVERY 31

static int supported_neon(void) { return 1; }

typedef struct { uint64x2_t v[4]; } VW;
typedef struct { uint8x16_t v[4]; } CNT;
typedef struct { int64x2_t v[4]; } TOT;

#define N_INL static inline __attribute__((always_inline))

N_INL VW vw_load(const uint64_t *p)
{
    VW r;
    for (int i = 0; i < 4; i++) r.v[i] = vld1q_u64(p + 2 * i);
    return r;
}
N_INL VW vw_bcast(uint64_t x)
{
    VW r;
    for (int i = 0; i < 4; i++) r.v[i] = vdupq_n_u64(x);
    return r;
}
N_INL VW vw_and(VW a, VW b)
{
    for (int i = 0; i < 4; i++) a.v[i] = vandq_u64(a.v[i], b.v[i]);
    return a;
}
N_INL CNT cnt_zero(void)
{
    CNT r;
    for (int i = 0; i < 4; i++) r.v[i] = vdupq_n_u8(0);
    return r;
}
N_INL CNT cnt_pop(CNT c, VW v)
{
    for (int i = 0; i < 4; i++) c.v[i] = vaddq_u8(c.v[i], vcntq_u8(vreinterpretq_u8_u64(v.v[i])));
    return c;
}
N_INL CNT cnt_pop_xor(CNT c, VW a, VW b)
{
    for (int i = 0; i < 4; i++)
        c.v[i] = vaddq_u8(c.v[i], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(a.v[i], b.v[i]))));
    return c;
}
N_INL CNT cnt_pop_andxor(CNT c, VW m, VW s, VW w)
{
    for (int i = 0; i < 4; i++)
        c.v[i] = vaddq_u8(c.v[i], vcntq_u8(vreinterpretq_u8_u64(vandq_u64(m.v[i], veorq_u64(s.v[i], w.v[i])))));
    return c;
}
N_INL TOT tot_zero(void)
{
    TOT r;
    for (int i = 0; i < 4; i++) r.v[i] = vdupq_n_s64(0);
    return r;
}
N_INL TOT tot_flush(TOT t, CNT c)
{
    for (int i = 0; i < 4; i++)
        t.v[i] = vaddq_s64(t.v[i], vreinterpretq_s64_u64(vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(c.v[i])))));
    return t;
}
N_INL TOT tot_set1(int64_t x)
{
    TOT r;
    for (int i = 0; i < 4; i++) r.v[i] = vdupq_n_s64(x);
    return r;
}
N_INL TOT tot_sub_shl(TOT base, TOT d, int sh)
{
    for (int i = 0; i < 4; i++) base.v[i] = vsubq_s64(base.v[i], sh ? vaddq_s64(d.v[i], d.v[i]) : d.v[i]);
    return base;
}
N_INL unsigned tot_gt_mask(TOT a, const int64_t *thr)
{
    unsigned m = 0;
    for (int i = 0; i < 4; i++) {
        uint64x2_t g = vcgtq_s64(a.v[i], vld1q_s64(thr + 2 * i));
        m |= (unsigned)(vgetq_lane_u64(g, 0) & 1) << (2 * i);
        m |= (unsigned)(vgetq_lane_u64(g, 1) & 1) << (2 * i + 1);
    }
    return m;
}
N_INL void tot_store(int64_t *p, TOT t)
{
    for (int i = 0; i < 4; i++) vst1q_s64(p + 2 * i, t.v[i]);
}

#include "layers.inc"
#else
typedef int fb_no_variant_here; /* an empty translation unit is not valid C */
#endif
