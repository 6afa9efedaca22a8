/* x86-64 without AVX2 (or with it disabled): the portable code with the POPCNT instruction. */
#include "isa_common.h"

#ifdef FB_X86
#define ISA popcnt
#define ATTR __attribute__((target("popcnt")))
#define RB 2
#define RB_TW2 2
#define NB 1
#define FLUSH_EVERY (1 << 30)

static int supported_popcnt(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt");
}

#include "prims_scalar.inc"
#include "layers.inc"
#else
typedef int fb_no_variant_here; /* an empty translation unit is not valid C */
#endif
