/* Helpers shared by the isa_*.c files (each includes layers.inc once per variant). */
#ifndef FASTBNN_ISA_COMMON_H
#define FASTBNN_ISA_COMMON_H

#include <string.h>

#include "fastbnn.h"

#define FB_STR_(x) #x
#define FB_STR(x) FB_STR_(x)

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FB_X86 1
/* AVX-512 VPOPCNTDQ/VNNI intrinsics and their __builtin_cpu_supports names: GCC 8, Clang 8 */
#if (defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && __GNUC__ >= 8)
#define FB_X86_AVX512 1
#endif
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FB_NEON 1
#endif

/* Longest converted input row (in_dim * in_ch bytes, checked by pack.py) plus read slack. */
#define FB_FIX8_ROW_MAX (1024 + 16)

/* The three input rows of output row y as unsigned bytes q + 128 (q ^ 0x80), zero slack after:
 * the SIMD variants read whole pairs/quads past the last window byte (zero weights there). */
static inline void fb_fix8_rows(const fb_layer *L, const int8_t *img, int y, uint8_t rows[3][FB_FIX8_ROW_MAX])
{
    const int n = L->in_dim * L->in_ch;
    for (int ky = 0; ky < 3; ky++) {
        const int8_t *src = img + (size_t)(y + ky) * n;
        for (int i = 0; i < n; i++)
            rows[ky][i] = (uint8_t)(src[i] ^ 0x80);
        memset(rows[ky] + n, 0, 16);
    }
}

#endif
