/* The index of each row's largest float32 (the first one on ties; the first NaN when a row has
 * one), as torch.argmax(x, dim=-1) returns it. Twin: kernels.argmax.argmax (torch.argmax). Why:
 * torch's CPU argmax reads a [16, 49152] logits batch at about 5 GB/s (0.67 ms, 3% of a batch-16
 * decode step); sixteen running maxima that gcc keeps in one vector register, and rows split over
 * torch's threads, read it at the cache's speed. Built by kernels/cpu_build.py. */
#include <stdint.h>

#include "grokd.h"

#define LANES 16

static int64_t row_argmax(const float *x, int64_t n) {
    float best[LANES];
    int64_t at[LANES];
    int nan = 0;
    int64_t i = 0;
    for (int l = 0; l < LANES; l++) best[l] = -__builtin_inff(), at[l] = l;
    for (; i + LANES <= n; i += LANES)
#pragma omp simd reduction(| : nan)
        for (int l = 0; l < LANES; l++) { /* lane l sees i + l: strictly greater keeps the first */
            const float v = x[i + l];
            nan |= v != v;
            at[l] = v > best[l] ? i + l : at[l];
            best[l] = v > best[l] ? v : best[l];
        }
    if (nan) {
        for (int64_t j = 0; j < n; j++)
            if (x[j] != x[j]) return j;
    }
    int64_t top = n > 0 ? 0 : -1;
    float top_v = n > 0 ? x[0] : 0.0f;
    for (int l = 0; l < LANES && i >= LANES; l++) /* the lanes' winners, smallest index on ties */
        if (best[l] > top_v || (best[l] == top_v && at[l] < top)) top_v = best[l], top = at[l];
    for (; i < n; i++) {
        if (x[i] != x[i]) return i;
        if (x[i] > top_v) top_v = x[i], top = i;
    }
    return top;
}

/* x [rows, cols] with row stride `stride` (elements) -> out [rows] */
void grokd_argmax_f32(const float *x, int64_t rows, int64_t cols, int64_t stride, int64_t *out, int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows > 1 && rows * cols >= 65536) schedule(static)
    for (int64_t r = 0; r < rows; r++) out[r] = row_argmax(x + r * stride, cols);
}
