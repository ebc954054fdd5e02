/* bf16 <-> float32 for the C kernels: bf16 is the top half of a float32, so widening is a shift
 * and narrowing a rounding to nearest, ties to even, as torch rounds (NaN stays a quiet NaN). */
#ifndef GROKD_BF16_H
#define GROKD_BF16_H

#include <stdint.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float x) { /* branch-free, so that simd loops vectorise it */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16, quiet_nan = (u | 0x00400000u) >> 16;
    return (uint16_t)(x != x ? quiet_nan : rounded);
}

/* float32 rounded to the nearest bf16, kept as float32 */
static inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

#endif
