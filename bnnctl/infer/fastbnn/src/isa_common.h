/* Helpers shared by the isa_*.c files (each includes layers.inc once per variant). */
#ifndef FASTBNN_ISA_COMMON_H
#define FASTBNN_ISA_COMMON_H

#include "fastbnn.h"

#define FB_STR_(x) #x
#define FB_STR(x) FB_STR_(x)

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FB_X86 1
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FB_NEON 1
#endif

#endif
