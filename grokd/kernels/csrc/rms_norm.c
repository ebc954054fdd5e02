/* RMSNorm in Hugging Face Llama's order of roundings: normalise in float32, round to the storage
 * dtype, multiply by the weight, round again. Twin: kernels.norm.rms_norm. Built and loaded by
 * kernels/cpu_build.py (see decode_attention.c for the OpenMP runtime it shares with torch). */
#include <math.h>
#include <stdint.h>

#include "bf16.h"
#include "grokd.h"

/* x [rows, dim] with row stride x_stride (elements); weight [dim]; out [rows, dim] contiguous */
void grokd_rms_norm_bf16(const uint16_t *x, int64_t rows, int64_t dim, int64_t x_stride,
                         const uint16_t *weight, float eps, uint16_t *out, int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows >= 16) schedule(static)
    for (int64_t t = 0; t < rows; t++) {
        const uint16_t *xr = x + t * x_stride;
        float total = 0.0f;
#pragma omp simd reduction(+ : total)
        for (int64_t d = 0; d < dim; d++) total += bf16_to_f32(xr[d]) * bf16_to_f32(xr[d]);
        const float inv = 1.0f / sqrtf(total / (float)dim + eps);
#pragma omp simd
        for (int64_t d = 0; d < dim; d++)
            out[t * dim + d] = f32_to_bf16(bf16_to_f32(weight[d]) * round_bf16(bf16_to_f32(xr[d]) * inv));
    }
}

void grokd_rms_norm_f32(const float *x, int64_t rows, int64_t dim, int64_t x_stride, const float *weight,
                        float eps, float *out, int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows >= 16) schedule(static)
    for (int64_t t = 0; t < rows; t++) {
        const float *xr = x + t * x_stride;
        float total = 0.0f;
#pragma omp simd reduction(+ : total)
        for (int64_t d = 0; d < dim; d++) total += xr[d] * xr[d];
        const float inv = 1.0f / sqrtf(total / (float)dim + eps);
#pragma omp simd
        for (int64_t d = 0; d < dim; d++) out[t * dim + d] = weight[d] * (xr[d] * inv);
    }
}
