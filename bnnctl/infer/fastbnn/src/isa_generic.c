/* Portable variant: plain C, any CPU and compiler with __builtin_popcountll. Always built. */
#include "isa_common.h"

#define ISA generic
#define ATTR
#define RB 2
#define RB_TW2 2
#define NB 1
#define FLUSH_EVERY (1 << 30)

static int supported_generic(void) { return 1; }

#include "prims_scalar.inc"
#include "layers.inc"
