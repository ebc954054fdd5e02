/* RoPE on the new tokens' queries and keys (HF's half-split layout, in place), then their keys
 * and values copied into the paged KV pool: one call per layer where the PyTorch path takes a
 * dozen small ops (slices, negation, cat, multiply, addcmul, stack, index_copy_). Twin:
 * kernels.rope.rope_write_kv. Built by kernels/cpu_build.py.
 *
 * Numerics follow torch's bf16 ops exactly: x * cos is rounded to bf16 (a bf16 multiply), then
 * rotate_half(x) * sin (exact in float32) is added in float32 and the sum rounded once (addcmul).
 * An int8 pool's rows are quantized as kernels.attention.quantize_kv does, operation for
 * operation: scale = max|x| / 127 (1 for an all-zero row), round(x / scale) half to even, clamped
 * to +-127, then the float32 scale in the row's last four bytes.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "grokd.h"

#define MAX_DIM 512

#define F32_ID(x) (x)

/* dst = src (dim elements of the activation type T) quantized: dim int8, then the float32 scale */
#define DEFINE_QUANTIZE_ROW(NAME, T, LOAD)                                                            \
    static inline void NAME(int8_t *dst, const T *src, int64_t dim) {                                 \
        float amax = 0.0f;                                                                            \
        for (int64_t d = 0; d < dim; d++) amax = fmaxf(amax, fabsf(LOAD(src[d])));                   \
        const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;                                       \
        for (int64_t d = 0; d < dim; d++) {                                                           \
            const float v = nearbyintf(LOAD(src[d]) / scale);                                         \
            dst[d] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);                       \
        }                                                                                             \
        memcpy(dst + dim, &scale, sizeof scale);                                                      \
    }
DEFINE_QUANTIZE_ROW(quantize_row_bf16, uint16_t, bf16_to_f32)
DEFINE_QUANTIZE_ROW(quantize_row_f32, float, F32_ID)

#define COPY_ROW(dst, src, dim) memcpy((dst), (src), (dim) * sizeof *(src))

/* qkv [tokens, row_stride]: heads query heads, then kv_heads keys, then kv_heads values, each dim
   wide; cos, sin [tokens, dim]; pool [2, num_blocks, kv_heads, block_size, WIDTH(dim)] of P;
   slots [tokens] (block * block_size + offset). Returns 1 when dim is odd or over MAX_DIM
   (nothing written). */
#define DEFINE_ROPE_WRITE(NAME, T, P, WIDTH, WRITE_ROW, LOAD, STORE, ROUND)                            \
    int NAME(T *qkv, int64_t tokens, int64_t row_stride, int64_t heads, int64_t kv_heads, int64_t dim, \
             const T *cos, const T *sin, P *pool, int64_t num_blocks, int64_t block_size,              \
             const int64_t *slots, int num_threads) {                                                 \
        if (dim % 2 || dim > MAX_DIM) return 1;                                                       \
        const int64_t half = dim / 2, width = WIDTH(dim);                                             \
        _Pragma("omp parallel for num_threads(num_threads) if (tokens >= 16) schedule(static)")      \
        for (int64_t t = 0; t < tokens; t++) {                                                        \
            T *row = qkv + t * row_stride;                                                            \
            const T *c = cos + t * dim, *s = sin + t * dim;                                           \
            for (int64_t h = 0; h < heads + kv_heads; h++) {                                          \
                T *x = row + h * dim;                                                                 \
                float rotated[MAX_DIM];                                                               \
                for (int64_t d = 0; d < half; d++) rotated[d] = -LOAD(x[d + half]);                   \
                for (int64_t d = half; d < dim; d++) rotated[d] = LOAD(x[d - half]);                  \
                for (int64_t d = 0; d < dim; d++)                                                     \
                    x[d] = STORE(ROUND(LOAD(x[d]) * LOAD(c[d])) + rotated[d] * LOAD(s[d]));           \
            }                                                                                         \
            const int64_t block = slots[t] / block_size, offset = slots[t] % block_size;              \
            for (int64_t h = 0; h < kv_heads; h++) {                                                  \
                const int64_t at = ((block * kv_heads + h) * block_size + offset) * width;            \
                WRITE_ROW(pool + at, row + (heads + h) * dim, dim);                                   \
                WRITE_ROW(pool + num_blocks * kv_heads * block_size * width + at,                     \
                          row + (heads + kv_heads + h) * dim, dim);                                   \
            }                                                                                         \
        }                                                                                             \
        return 0;                                                                                     \
    }

#define SAME_WIDTH(dim) (dim)
#define INT8_WIDTH(dim) ((dim) + 4)
DEFINE_ROPE_WRITE(grokd_rope_write_kv_bf16, uint16_t, uint16_t, SAME_WIDTH, COPY_ROW, bf16_to_f32, f32_to_bf16,
                  round_bf16)
DEFINE_ROPE_WRITE(grokd_rope_write_kv_f32, float, float, SAME_WIDTH, COPY_ROW, F32_ID, F32_ID, F32_ID)
DEFINE_ROPE_WRITE(grokd_rope_write_kv_bf16_i8, uint16_t, int8_t, INT8_WIDTH, quantize_row_bf16, bf16_to_f32,
                  f32_to_bf16, round_bf16)
DEFINE_ROPE_WRITE(grokd_rope_write_kv_f32_i8, float, int8_t, INT8_WIDTH, quantize_row_f32, F32_ID, F32_ID, F32_ID)
