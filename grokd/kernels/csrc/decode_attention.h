/* What decode_attention.c's walk and the per-instruction-set kernels share (not part of the ABI).
 *
 * The walk splits a call into items (one row's kv head over one chunk of tokens) and runs, per item,
 * a scores kernel and a values kernel, or one kernel doing both (the one-pass walk). Which kernels a
 * call runs is chosen once, at its exported entry point, from what this build's flags compiled in:
 *   decode_attention_portable.c  the widened loops: gcc vector extensions, elements widened to
 *                                float32 in registers; every tier, and all of the AVX2 tier's kernel
 *   decode_attention_avx512.c    vdpbf16ps (AVX512-BF16) and vpdpbusd / vpdpwssd (AVX512-VNNI)
 *                                paths, compiled to nothing where the flags lack them
 * Another tier adds a file of its own kernels and a line at each entry point that picks them.
 *
 * Element types differ between the four exported kernels (q bf16 or float32; pool bf16, float32 or
 * int8 with a scale per row), so the shared loops take an Elem constant and reach memory through the
 * small typed helpers below. They are always inlined into functions that fix it (and the head
 * dimension), so each (q, pool) pair compiles to its own loops, with no test of the type inside them.
 */
#ifndef GROKD_DECODE_ATTENTION_H
#define GROKD_DECODE_ATTENTION_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "grokd.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* what this build compiled in; GROKD_NO_VNNI leaves the VNNI paths out, for A/B runs */
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && !defined(GROKD_NO_VNNI)
#define HAVE_VNNI 1
#else
#define HAVE_VNNI 0
#endif
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define HAVE_DPBF16 1
#else
#define HAVE_DPBF16 0
#endif

#define INTERNAL __attribute__((visibility("hidden"))) /* shared between this library's files only */

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
typedef uint16_t u16x16 __attribute__((vector_size(32)));

/* ---- element types ---------------------------------------------------------------------------- */

/* q's (and out's) type, or the pool's. An ELEM_I8 pool row is dim int8 values, then their
   native-endian float32 scale (value = int8 * scale; kernels.attention.quantize_kv). */
typedef enum { ELEM_BF16, ELEM_F32, ELEM_I8 } Elem;

static inline int64_t elem_bytes(Elem e) { return e == ELEM_BF16 ? 2 : e == ELEM_F32 ? 4 : 1; }

/* bytes of one (token, head) row of a pool of head dim `dim` */
static inline int64_t row_bytes(Elem kv, int64_t dim) { return kv == ELEM_I8 ? dim + 4 : dim * elem_bytes(kv); }

/* a row's scale: an int8 row's float32 after its values, else the constant 1 (which the compiler
   drops) */
static inline float row_scale(Elem kv, const char *row, int64_t dim) {
    if (kv != ELEM_I8) return 1.0f;
    float scale;
    memcpy(&scale, row + dim, sizeof scale);
    return scale;
}

/* element d of a q row or a pool row, in float32 */
static inline float widen1(Elem e, const char *row, int64_t d) {
    switch (e) {
    case ELEM_BF16: return bf16_to_f32(((const uint16_t *)row)[d]);
    case ELEM_F32: return ((const float *)row)[d];
    default: return (float)((const int8_t *)row)[d];
    }
}

/* out[i] = x in q's type */
static inline void narrow_q(Elem q, void *out, int64_t i, float x) {
    if (q == ELEM_BF16)
        ((uint16_t *)out)[i] = f32_to_bf16(x);
    else
        ((float *)out)[i] = x;
}

/* ---- 32 elements at a time: loads into two float32 vectors, and back ---------------------------- */

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

/* 32 bf16 -> two float32 vectors in order (a zero-extension and a shift per 16): q against an int8
   pool, whose values widen in order; once per (item, query head), so its cost does not matter */
static inline void widen32_bf16_in_order(const uint16_t *p, f32x16 *first, f32x16 *second) {
    u16x16 a, b;
    memcpy(&a, p, sizeof a);
    memcpy(&b, p + LANES, sizeof b);
    const u32x16 lo = __builtin_convertvector(a, u32x16) << 16, hi = __builtin_convertvector(b, u32x16) << 16;
    memcpy(first, &lo, sizeof *first);
    memcpy(second, &hi, sizeof *second);
}

/* 16 int8 -> 16 float32 in order: sign-extend, convert (vpmovsxbd + vcvtdq2ps). Intrinsics, because
   gcc 12 turns __builtin_convertvector from int8 into sixteen scalar conversions. */
static inline void widen16_i8(const int8_t *p, f32x16 *out) {
#if defined(__AVX512F__)
    const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    memcpy(out, &v, sizeof *out);
#elif defined(__AVX2__)
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
    memcpy(out, &lo, sizeof lo);
    memcpy((char *)out + sizeof lo, &hi, sizeof hi);
#else
    for (int i = 0; i < LANES; i++) (*out)[i] = (float)p[i];
#endif
}

/* 32 int8 -> two float32 vectors in order; rows are dim + 4 bytes apart, so the loads are
   unaligned */
static inline void widen32_i8(const int8_t *p, f32x16 *first, f32x16 *second) {
    widen16_i8(p, first);
    widen16_i8(p + LANES, second);
}

/* elements [d, d + 32) of a pool row, in the kernel's lane order for that pool: even/odd for bf16,
   in order for float32 and int8 */
static inline void widen32_kv(Elem kv, const char *row, int64_t d, f32x16 *a, f32x16 *b) {
    switch (kv) {
    case ELEM_BF16: widen32_bf16((const uint16_t *)row + d, a, b); break;
    case ELEM_F32: widen32_f32((const float *)row + d, a, b); break;
    default: widen32_i8((const int8_t *)row + d, a, b); break;
    }
}

/* elements [d, d + 32) of a q row, in the lane order of the pool it meets */
static inline void widen32_q(Elem q, Elem kv, const char *row, int64_t d, f32x16 *a, f32x16 *b) {
    if (q == ELEM_F32)
        widen32_f32((const float *)row + d, a, b);
    else if (kv == ELEM_BF16)
        widen32_bf16((const uint16_t *)row + d, a, b);
    else
        widen32_bf16_in_order((const uint16_t *)row + d, a, b);
}

/* two vectors in the pool's lane order back to 32 floats in order */
static inline void unpair32(Elem kv, float *dst, f32x16 a, f32x16 b) {
    if (kv == ELEM_BF16)
        unpair32_bf16(dst, a, b);
    else
        unpair32_f32(dst, a, b);
}

/* ---- horizontal sums -------------------------------------------------------------------------- */

static inline float sum16(f32x16 v) { /* a tree of vector adds, not 15 dependent scalar ones */
    f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
              __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* the sums of four vectors at once: three levels of shuffles and adds shared by the four, where
   four separate sum16 calls would each pay for all of theirs (the same tree, so the same bits) */
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

/* ---- reading a row's blocks ------------------------------------------------------------------- */

/* Blocks of a row are scattered through the pool, so the hardware prefetcher loses the stream at
   every block boundary. The loops ask for the block PREFETCH_BLOCKS ahead, into L2 (into L1 ran out
   of miss buffers), which keeps DRAM busy when the KV is cold, as in a real step where the weights
   have flushed the caches. An int8 pool's blocks are about half the bytes, so it asks
   PREFETCH_BLOCKS_I8 ahead (about the same distance in bytes). Each item also asks for its first
   blocks up front (the loops' own requests start only that many blocks in), and the scores ask for
   the values of the blocks whose keys they read, so that the weighted sums (the same items on the
   same thread: both are static splits of one item list) find them in L2 or L3 instead of DRAM; only
   while the call's values fit comfortably in the caches (PREFETCH_VALUES_BYTES): beyond that they
   are evicted before they are used, and the step takes longer (benchmarks/RESULTS.md). */
#define PREFETCH_BLOCKS 2
#define PREFETCH_BLOCKS_I8 4
#define PREFETCH_VALUES_BYTES (4 << 20)
static inline void prefetch_block(const void *p, int64_t bytes) { /* every cache line of [p, p + bytes) */
    const uintptr_t end = (uintptr_t)p + bytes;
    for (uintptr_t line = (uintptr_t)p & ~(uintptr_t)63; line < end; line += 64) __builtin_prefetch((const void *)line, 0, 2);
}

/* Where a loop over tokens [t0, t1) of kv head h reads: `base` is the pool part (keys or values),
   `block_bytes` one (block, head)'s bytes. */
typedef struct {
    const char *base;
    const int64_t *table;
    int64_t block_size, kv_heads, head, block_bytes, ahead;
} BlockStream;

static inline void prefetch_table_block(const BlockStream *b, int64_t index) {
    prefetch_block(b->base + (b->table[index] * b->kv_heads + b->head) * b->block_bytes, b->block_bytes);
}

/* the loop's first `ahead` blocks: its own requests (prefetch_ahead) start only that far in */
static inline void prefetch_first_blocks(const BlockStream *b, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1 && t < t0 + b->ahead * b->block_size; t += b->block_size)
        prefetch_table_block(b, t / b->block_size);
}

/* the block holding token t (a block start), after asking for the one `ahead` blocks on (if the
   loop gets there before t1) when `prefetch` is set */
static inline const char *stream_block(const BlockStream *b, int64_t t, int64_t t1, int prefetch) {
    if (prefetch && t + b->ahead * b->block_size < t1) prefetch_table_block(b, t / b->block_size + b->ahead);
    return b->base + (b->table[t / b->block_size] * b->kv_heads + b->head) * b->block_bytes;
}

static inline int64_t chunks_of(int64_t len, int64_t chunk) { return (len + chunk - 1) / chunk; }

/* ---- work items and the kernels' interface ---------------------------------------------------- */

/* one work item: row b's kv head h over tokens [t0, t1), t0 on a block boundary */
typedef struct {
    const void *q;        /* the call's q, [rows, q_heads, head_dim] with the Shape's strides */
    const char *pool;     /* [2 (keys, values), blocks, kv_heads, block_size, row] */
    const int64_t *table; /* row b's block table */
    const Shape *s;
    int64_t b, h, t0, t1;
    float temperature; /* row b's length temperature (1: none), applied after the cap */
} Item;

/* q . k for the item's `group` query heads: scores[g * stride + t - t0], asking for the same tokens'
   values too when prefetch_values */
typedef void ScoresFn(const Item *it, float *scores, int64_t stride, int prefetch_values);
/* acc[g * dim + d] = sum over the item's tokens t of probs[g * stride + t - t0] * v_t[d] */
typedef void ValuesFn(const Item *it, const float *probs, int64_t stride, float *acc);
/* both for one item in one pass: part = [group * dim sums, group maxima, group totals] */
typedef void OnePassFn(const Item *it, float *part);

/* row q head g of the item, as bytes */
static inline const char *q_head(Elem q, const Item *it, int64_t group, int64_t g) {
    const Shape *s = it->s;
    return (const char *)it->q + (it->b * s->q_row_stride + (it->h * group + g) * s->q_head_stride) * elem_bytes(q);
}

/* the item's keys, or its values, as a BlockStream asking `ahead` blocks on */
static inline BlockStream item_stream(Elem kv, const Item *it, int values, int64_t dim) {
    const Shape *s = it->s;
    const int64_t block_bytes = s->block_size * row_bytes(kv, dim);
    const char *base = it->pool + (values ? s->num_blocks * s->kv_heads * block_bytes : 0);
    return (BlockStream){base, it->table, s->block_size, s->kv_heads, it->h, block_bytes,
                         kv == ELEM_I8 ? PREFETCH_BLOCKS_I8 : PREFETCH_BLOCKS};
}

/* the block of keys holding token t (a block start), asking for the one `ahead` too and, when
   prefetch_values, for this block's values */
static inline const char *key_block(const BlockStream *keys, const Item *it, int64_t t, int prefetch_values) {
    const char *k = stream_block(keys, t, it->t1, 1);
    if (prefetch_values)
        prefetch_block(keys->base + ((it->s->num_blocks + keys->table[t / keys->block_size]) * keys->kv_heads +
                                     keys->head) * keys->block_bytes,
                       keys->block_bytes);
    return k;
}

/* ---- the softmax's pieces (the four-phase walk's and the one-pass kernel's) ---------------------- */

/* the length temperature of a row whose context holds len tokens (its query at position len - 1):
   log2(p) / log2(temperature_len) beyond temperature_len, else 1 (kernels.attention.length_temperature) */
static inline float row_temperature(const Shape *s, int64_t len) {
    const int64_t p = len - 1;
    if (s->temperature_len <= 0 || p <= s->temperature_len) return 1.0f;
    const float inv = (float)(1.0 / log2((double)s->temperature_len));
    return log2f((float)p) * inv;
}

/* scale one (row, query head)'s scores in place, after rounding them to bf16 in bf16 mode (as the
   reference's bf16 matmul rounds q.k), soft-cap them and multiply them by the row's length
   temperature; returns their maximum */
static inline float scale_scores(float *x, int64_t len, const Shape *s, float temperature) {
    const float scale = s->scale, cap = s->softcap;
    const int bf16 = s->bf16;
    float top = -INFINITY;
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
    if (temperature != 1.0f) {
        top = -INFINITY;
#pragma omp simd reduction(max : top)
        for (int64_t t = 0; t < len; t++) {
            const float v = x[t] * temperature;
            x[t] = v;
            top = v > top ? v : top;
        }
    }
    return top;
}

/* x = exp(x - top) in place; returns their sum */
static inline float exp_scores(float *x, int64_t len, float top) {
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < len; t++) {
        const float e = expf(x[t] - top);
        x[t] = e;
        total += e;
    }
    return total;
}

/* ---- the widened scores, token by token (the portable kernels' and the AVX-512 ones' tails) ------- */

/* The item's query heads for the widened loops: qf[g * dim + d] in float32 (the scalar loop's) and,
   where paired (dim a multiple of 32), qv[g * dim / 16 + v] as vectors in the pool's lane order. */
static inline __attribute__((always_inline)) void widen_q_heads(Elem q, Elem kv, const Item *it, int64_t group,
                                                                int64_t dim, int paired, float *qf, f32x16 *qv) {
    const int64_t vecs = dim / LANES;
    for (int64_t g = 0; g < group; g++) {
        const char *qr = q_head(q, it, group, g);
        for (int64_t d = 0; d < dim; d++) qf[g * dim + d] = widen1(q, qr, d);
        if (paired)
            for (int64_t v = 0; v < vecs; v += 2) widen32_q(q, kv, qr, v * LANES, &qv[g * vecs + v], &qv[g * vecs + v + 1]);
    }
}

/* the scores of the four tokens whose rows start at k, w bytes apart, for the group's heads: their
   sums share the shuffles (sum16x4) */
static inline __attribute__((always_inline)) void score4_widened(Elem kv, const f32x16 *qv, int64_t group,
                                                                 const char *k, int64_t w, float *out,
                                                                 int64_t stride, const int64_t dim) {
    const int64_t vecs = dim / LANES;
    f32x16 kx[4][vecs];
    for (int j = 0; j < 4; j++)
        for (int64_t v = 0; v < vecs; v += 2) widen32_kv(kv, k + j * w, v * LANES, &kx[j][v], &kx[j][v + 1]);
    f32x4 row_scales = {1.0f, 1.0f, 1.0f, 1.0f};
    if (kv == ELEM_I8)
        row_scales = (f32x4){row_scale(kv, k, dim), row_scale(kv, k + w, dim), row_scale(kv, k + 2 * w, dim),
                             row_scale(kv, k + 3 * w, dim)};
    for (int64_t g = 0; g < group; g++) {
        const f32x16 *qg = qv + g * vecs;
        f32x16 a0 = qg[0] * kx[0][0], a1 = qg[0] * kx[1][0], a2 = qg[0] * kx[2][0], a3 = qg[0] * kx[3][0];
        for (int64_t v = 1; v < vecs; v++) {
            a0 += qg[v] * kx[0][v];
            a1 += qg[v] * kx[1][v];
            a2 += qg[v] * kx[2][v];
            a3 += qg[v] * kx[3][v];
        }
        f32x4 dots = sum16x4(a0, a1, a2, a3);
        if (kv == ELEM_I8) dots *= row_scales;
        memcpy(out + g * stride, &dots, sizeof dots);
    }
}

/* the score of the token whose row is k, for the group's heads */
static inline __attribute__((always_inline)) void score1_widened(Elem kv, const f32x16 *qv, int64_t group,
                                                                 const char *k, float *out, int64_t stride,
                                                                 const int64_t dim) {
    const int64_t vecs = dim / LANES;
    const float scale = row_scale(kv, k, dim);
    f32x16 kx[vecs];
    for (int64_t v = 0; v < vecs; v += 2) widen32_kv(kv, k, v * LANES, &kx[v], &kx[v + 1]);
    for (int64_t g = 0; g < group; g++) {
        f32x16 acc = qv[g * vecs] * kx[0];
        for (int64_t v = 1; v < vecs; v++) acc += qv[g * vecs + v] * kx[v];
        out[g * stride] = sum16(acc) * scale;
    }
}

/* the same for any dim, element by element */
static inline __attribute__((always_inline)) void score1_scalar(Elem kv, const float *qf, int64_t group,
                                                                const char *k, float *out, int64_t stride,
                                                                const int64_t dim) {
    const float scale = row_scale(kv, k, dim);
    for (int64_t g = 0; g < group; g++) {
        float dot = 0.0f;
        for (int64_t d = 0; d < dim; d++) dot += qf[g * dim + d] * widen1(kv, k, d);
        out[g * stride] = dot * scale;
    }
}

/* ---- the kernels ------------------------------------------------------------------------------ */

/* decode_attention_portable.c: scores by (q, pool) type, weighted sums by pool type */
INTERNAL void attn_scores_bf16_portable(const Item *it, float *scores, int64_t stride, int prefetch_values);
INTERNAL void attn_scores_f32_portable(const Item *it, float *scores, int64_t stride, int prefetch_values);
INTERNAL void attn_scores_bf16_i8_portable(const Item *it, float *scores, int64_t stride, int prefetch_values);
INTERNAL void attn_scores_f32_i8_portable(const Item *it, float *scores, int64_t stride, int prefetch_values);
INTERNAL void attn_values_bf16_portable(const Item *it, const float *probs, int64_t stride, float *acc);
INTERNAL void attn_values_f32_portable(const Item *it, const float *probs, int64_t stride, float *acc);
INTERNAL void attn_values_i8_portable(const Item *it, const float *probs, int64_t stride, float *acc);

/* decode_attention_avx512.c */
#if HAVE_DPBF16 /* bf16 q, bf16 pool */
INTERNAL void attn_scores_bf16_dpbf16(const Item *it, float *scores, int64_t stride, int prefetch_values);
INTERNAL void attn_values_bf16_dpbf16(const Item *it, const float *probs, int64_t stride, float *acc);
#endif
#if HAVE_DPBF16 || HAVE_VNNI /* bf16 q, int8 pool */
INTERNAL void attn_scores_bf16_i8_avx512(const Item *it, float *scores, int64_t stride, int prefetch_values);
#endif
#if HAVE_VNNI
INTERNAL void attn_values_i8_vnni(const Item *it, const float *probs, int64_t stride, float *acc);
INTERNAL void attn_one_pass_bf16_i8_vnni(const Item *it, float *part);
#endif

#endif
