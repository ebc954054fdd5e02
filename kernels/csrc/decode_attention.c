/* Paged decode attention on the CPU, reading the KV pool in place, on torch's OpenMP threads.
 *
 * Twin: kernels.attention.paged_attention (the per-sequence PyTorch reference). Built and loaded by
 * kernels/cpu_build.py, which links this library against the libgomp that torch already loaded, so
 * `omp parallel` reuses torch's own thread team instead of starting a second one that would fight it
 * for the cores.
 *
 * For each decode row b and query head h:  out[b, h] = softmax(scale * q[b, h] . K_b) . V_b, where
 * row b's keys and values are read through tables[b] from pool [2, blocks, kv_heads, block_size,
 * dim]. The numerics are the reference's: q.k accumulates in float32 and, in bf16 mode, is rounded
 * to bf16 (what a bf16 matmul returns); the scores are scaled, soft-capped and softmaxed in float32;
 * the probabilities are rounded to bf16 before the weighted sum, which accumulates in float32.
 *
 * The work is split into (row, kv head, chunk of CHUNK_TOKENS) items so that one long context keeps
 * every thread busy: phase 1 writes each item's scores, phase 2 does each (row, query head)'s
 * softmax over its whole context, phase 3 each item's partial weighted sum, phase 4 adds the
 * partials in chunk order. The storage-type-specific parts are in decode_attention_impl.h, included
 * once for bf16 and once for float32.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define CHUNK_TOKENS 256
#define LANES 16

/* glibc's libmvec has vector expf and tanhf (within a few ulp, like the scalar ones); declaring
   them lets gcc vectorise the softmax with them instead of calling the scalar ones per element. */
#if defined(__x86_64__) && defined(GROKD_LIBMVEC)
#pragma omp declare simd notinbranch
#endif
extern float expf(float);
#if defined(__x86_64__) && defined(GROKD_LIBMVEC)
#pragma omp declare simd notinbranch
#endif
extern float tanhf(float);

typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

typedef struct {
    int64_t rows, q_heads, kv_heads, block_size, head_dim, num_blocks;
    int64_t q_row_stride, q_head_stride, table_stride, len_stride; /* in elements */
    float scale, softcap;
    int32_t bf16;
} Shape;

/* 32 bf16 -> two float32 vectors, the even-indexed elements and the odd-indexed ones: a mask and a
   shift of each 32-bit lane, where widening in order would take shuffles (the slow part). Dot
   products do not care about the order; weighted sums undo it once at the end (unpair32_bf16). */
static inline void widen32_bf16(const uint16_t *p, f32x16 *even, f32x16 *odd) {
    u32x16 w;
    memcpy(&w, p, sizeof w);
    const u32x16 lo = w << 16, hi = w & 0xFFFF0000u;
    memcpy(even, &lo, sizeof *even);
    memcpy(odd, &hi, sizeof *odd);
}

static inline void unpair32_bf16(float *dst, f32x16 even, f32x16 odd) {
    for (int i = 0; i < LANES; i++) dst[2 * i] = even[i], dst[2 * i + 1] = odd[i];
}

static inline void widen32_f32(const float *p, f32x16 *first, f32x16 *second) {
    memcpy(first, p, sizeof *first);
    memcpy(second, p + LANES, sizeof *second);
}

static inline void unpair32_f32(float *dst, f32x16 first, f32x16 second) {
    memcpy(dst, &first, sizeof first);
    memcpy(dst + LANES, &second, sizeof second);
}

static inline float sum16(f32x16 v) { /* a tree of vector adds, not 15 dependent scalar ones */
    f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
              __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* the sums of four vectors at once: three levels of shuffles and adds shared by the four, where
   four separate sum16 calls would each pay for all of theirs */
static inline f32x4 sum16x4(f32x16 a0, f32x16 a1, f32x16 a2, f32x16 a3) {
    const f32x16 s01 = __builtin_shufflevector(a0, a1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                       __builtin_shufflevector(a0, a1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const f32x16 s23 = __builtin_shufflevector(a2, a3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                       __builtin_shufflevector(a2, a3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const f32x16 u = __builtin_shufflevector(s01, s23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                     __builtin_shufflevector(s01, s23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const f32x8 w = __builtin_shufflevector(u, u, 0, 1, 4, 5, 8, 9, 12, 13) +
                    __builtin_shufflevector(u, u, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(w, w, 0, 2, 4, 6) + __builtin_shufflevector(w, w, 1, 3, 5, 7);
}

/* Blocks of a row are scattered through the pool, so the hardware prefetcher loses the stream at
   every block boundary. Asking for the block PREFETCH_BLOCKS ahead, into L2 (into L1 ran out of
   miss buffers), keeps DRAM busy: on cold KV, as in a real step where the weights have flushed the
   caches, 2,048 tokens went from about 130 to 95 us per layer (two threads). */
#define PREFETCH_BLOCKS 2
static inline void prefetch_block(const void *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch((const char *)p + off, 0, 2);
}

static inline int64_t chunks_of(int64_t len, int64_t chunk) { return (len + chunk - 1) / chunk; }

/* scale, soft-cap and softmax one (row, query head)'s scores in place; in bf16 mode the q.k sums
   and the probabilities are rounded to bf16 as the reference's bf16 matmuls round them */
static void softmax_row(float *x, int64_t len, const Shape *s) {
    const float scale = s->scale, cap = s->softcap;
    const int bf16 = s->bf16;
    float top = -INFINITY, total = 0.0f;
#pragma omp simd reduction(max : top)
    for (int64_t t = 0; t < len; t++) {
        float v = (bf16 ? round_bf16(x[t]) : x[t]) * scale;
        x[t] = v;
        top = v > top ? v : top;
    }
    if (cap > 0.0f) {
        top = -INFINITY;
#pragma omp simd reduction(max : top)
        for (int64_t t = 0; t < len; t++) {
            const float v = cap * tanhf(x[t] / cap);
            x[t] = v;
            top = v > top ? v : top;
        }
    }
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < len; t++) {
        const float e = expf(x[t] - top);
        x[t] = e;
        total += e;
    }
    const float inv = 1.0f / total;
#pragma omp simd
    for (int64_t t = 0; t < len; t++) x[t] = bf16 ? round_bf16(x[t] * inv) : x[t] * inv;
}

#define T uint16_t
#define NAME grokd_decode_attention_bf16
#define WIDEN1 bf16_to_f32
#define WIDEN32 widen32_bf16
#define UNPAIR32 unpair32_bf16
#define NARROW1 f32_to_bf16
#include "decode_attention_impl.h"
#undef T
#undef NAME
#undef WIDEN1
#undef WIDEN32
#undef UNPAIR32
#undef NARROW1

#define T float
#define NAME grokd_decode_attention_f32
#define WIDEN1(x) (x)
#define WIDEN32 widen32_f32
#define UNPAIR32 unpair32_f32
#define NARROW1(x) (x)
#include "decode_attention_impl.h"

/* Lets the loader check that this library's OpenMP runtime is torch's: the address of one of its
   functions, which dladdr maps back to the file that provides it (NULL when built without OpenMP). */
void *grokd_omp_function(void) {
#ifdef _OPENMP
    return (void *)&omp_get_max_threads;
#else
    return NULL;
#endif
}
