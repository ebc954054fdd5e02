/* Paged decode attention on the CPU, reading the KV pool in place, on torch's OpenMP threads.
 *
 * Twin: kernels.attention.paged_attention (the per-sequence PyTorch reference). Built and loaded by
 * kernels/cpu_build.py, which links this library against the libgomp that torch already loaded, so
 * `omp parallel` reuses torch's own thread team instead of starting a second one that would fight it
 * for the cores.
 *
 * For each decode row b and query head h:  out[b, h] = softmax(scale * q[b, h] . K_b) . V_b, where
 * row b's keys and values are read through tables[b] from pool [2, blocks, kv_heads, block_size,
 * width]. The numerics are the reference's: q.k accumulates in float32 and, in bf16 mode, is rounded
 * to bf16 (what a bf16 matmul returns); the scores are scaled, soft-capped and softmaxed in float32;
 * the probabilities are rounded to bf16 before the weighted sum, which accumulates in float32.
 *
 * Pools are bf16 or float32 (width = head_dim, q's dtype) or int8 (width = head_dim + 4 bytes: each
 * (token, head) row is head_dim int8 values then their native-endian float32 scale, value = int8 *
 * scale; kernels.attention.quantize_kv). An int8 row is never dequantized to memory: its values are
 * widened to float32 in registers, q.k is computed against the int8 values and multiplied by the
 * key's scale once per token (score = scale_k * sum q_d * k_d), and the weighted sum multiplies each
 * probability by the value's scale once per token (out = sum p_t * scale_v * v_t). The reference
 * rounds int8 * scale to q's dtype first, so in bf16 mode the two agree to bf16 precision, not to
 * the bit. Shape.head_dim is the real head dimension, not the row width.
 *
 * A bf16 q against a bf16 pool, on a CPU with AVX512-BF16, multiplies bf16 pairs with vdpbf16ps
 * instead of widening them (HAVE_DPBF16): q.k against the keys as they lie, and the weighted sum two
 * tokens per instruction. Its float32 additions are the widened loops', in their order, so it gives
 * their bits, except that vdpbf16ps reads denormal inputs as zero. At SmolLM2's shape (9 query heads,
 * 3 kv heads, head dim 64), two threads, per layer, against the widened loops in the same process:
 * 1 row of 2,048 tokens 0.77-0.82x the time in cache (about 46 -> 37 us) and 0.85-0.94x with the
 * pools cold (30 layers' pools in turn); 1 x 128 0.89x; 16 rows of 200 0.83x in cache, 0.93-0.96x
 * cold (medians of interleaved runs, several runs). Cold, the memory bounds it more than the compute.
 * A bf16 q over an int8 pool uses vdpbf16ps for q.k too, its keys converted to bf16 (exact) sixteen
 * tokens at a time (see the impl); float32 sums in another order, so not the widened loop's bits.
 *
 * On a CPU with AVX512-VNNI a bf16 q over an int8 pool goes further, as llama.cpp does with a q8_0
 * cache: q is quantized per head the way the keys are (int8, scale max|q| / 127), and q.k is summed
 * exactly in int32 by vpdpbusd over key rows transposed sixteen tokens at a time (so the scores come
 * out one token per lane, with no horizontal sums); the weighted sum quantizes each head's p_t *
 * scale_v(t) to int16 (one scale per chunk: finer than the bf16 probabilities of the other paths)
 * and sums in int32 with vpdpwssd, two tokens per instruction (benchmarks/RESULTS.md#cpu-decode-kernels
 * and its changelog).
 *
 * The work is split into (row, kv head, chunk of CHUNK_TOKENS) items so that one long context keeps
 * every thread busy. In general, phase 1 writes each item's scores, phase 2 does each (row, query
 * head)'s softmax over its whole context, phase 3 each item's partial weighted sum, phase 4 adds the
 * partials in chunk order. The VNNI int8 path does each item in one pass instead (flash-decoding:
 * scores, a softmax against the chunk's own maximum, the weighted sum while the chunk's values are
 * still in cache), then merges the chunks by their maxima. The type-specific parts are in
 * decode_attention_impl.h, included once per (q type, pool type): bf16/bf16, float32/float32,
 * bf16/int8, float32/int8.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "grokd.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

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
typedef uint16_t u16x16 __attribute__((vector_size(32)));

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

/* 32 int8 -> two float32 vectors in order; rows are head_dim + 4 bytes apart, so the loads are
   unaligned */
static inline void widen32_i8(const int8_t *p, f32x16 *first, f32x16 *second) {
    widen16_i8(p, first);
    widen16_i8(p + LANES, second);
}

/* an int8 row's float32 scale, stored after its `dim` values */
static inline float row_scale_i8(const int8_t *row, int64_t dim) {
    float scale;
    memcpy(&scale, row + dim, sizeof scale);
    return scale;
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

#if defined(__AVX512F__) /* sum16x16 needs only AVX-512F */
/* the sums of sixteen vectors, lane j the sum of a[j]: sum16's tree for each (lanes i and i + 8,
   then i + 4, i + 2, i + 1, so the same bits), the shuffles shared by all sixteen and half of them
   blends (which more of the core's pipes run): 17 shuffles where four sum16x4 calls take 40. With
   vdpbf16ps the sums, not the products, were most of q.k's work: 4.8 -> 4.3 ns per token and kv
   head (dot_dpbf16's loop). */
static inline f32x16 sum16x16(const f32x16 a[16]) {
    __m512 r[8], u[4], w[2];
    for (int m = 0; m < 8; m++) /* [a_lo + a_hi | b_hi + b_lo]: tokens 2m, 2m + 1, eight sums each */
        r[m] = _mm512_add_ps(_mm512_mask_blend_ps(0xFF00, a[2 * m], a[2 * m + 1]),
                             _mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0x4E));
    const __m512i swap_quads = _mm512_set_epi32(27, 26, 25, 24, 15, 14, 13, 12, 19, 18, 17, 16, 7, 6, 5, 4);
    for (int m = 0; m < 4; m++) /* 128-bit chunks: tokens 4m, 4m + 2, 4m + 1, 4m + 3, four sums each */
        u[m] = _mm512_add_ps(_mm512_mask_blend_ps(0xF0F0, r[2 * m], r[2 * m + 1]),
                             _mm512_permutex2var_ps(r[2 * m], swap_quads, r[2 * m + 1]));
    for (int m = 0; m < 2; m++) /* two sums of two tokens per chunk */
        w[m] = _mm512_add_ps(_mm512_mask_blend_ps(0xCCCC, u[2 * m], u[2 * m + 1]),
                             _mm512_castpd_ps(_mm512_shuffle_pd(_mm512_castps_pd(u[2 * m]),
                                                                _mm512_castps_pd(u[2 * m + 1]), 0x55)));
    const __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
    /* lanes hold tokens 0 4 8 12, 2 6 10 14, 1 5 9 13, 3 7 11 15: back in order */
    return _mm512_permutexvar_ps(_mm512_set_epi32(15, 7, 11, 3, 14, 6, 10, 2, 13, 5, 9, 1, 12, 4, 8, 0), sums);
}

/* 32 sums in dpbf16_two_tokens's order, which the VNNI values share (lane i of `lo` is element
   8 (i / 4) + i % 4, of `hi` that plus 4), back in order */
static inline void unpair32_dpbf16(float *dst, __m512 lo, __m512 hi) {
    const __m512i first = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i second = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(lo, first, hi));
    _mm512_storeu_ps(dst + LANES, _mm512_permutex2var_ps(lo, second, hi));
}
/* 32 int8 -> 32 bf16 in order (exact: |v| <= 127 needs 7 bits), for vdpbf16ps against a bf16 q */
#if defined(__AVX512BF16__)
static inline __m512bh i8x32_to_bf16(const int8_t *p) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
    return _mm512_cvtne2ps_pbh(hi, lo);
}
#endif
#endif

/* GROKD_NO_VNNI builds the paths from before them, for A/B runs against the VNNI ones */
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && !defined(GROKD_NO_VNNI)
#define HAVE_VNNI 1
/* sixteen rows of sixteen int32 (row t: token t's key, four bytes a lane) -> out[i], lane t the i-th
   four bytes of token t: two rounds of in-lane unpacks, then a 4 x 4 transpose of 128-bit chunks
   (64 two-source shuffles for sixteen tokens, shared by all the kv head's query heads) */
static inline void transpose16_epi32(const __m512i r[16], __m512i out[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; i++) { /* a[2i] chunk k: tokens 2i, 2i + 1 at dwords 4k, 4k + 1; a[2i + 1] at 4k + 2, 4k + 3 */
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* b[4g + j] chunk k: tokens 4g .. 4g + 3 at dword 4k + j */
        b[4 * g] = _mm512_unpacklo_epi64(a[4 * g], a[4 * g + 2]);
        b[4 * g + 1] = _mm512_unpackhi_epi64(a[4 * g], a[4 * g + 2]);
        b[4 * g + 2] = _mm512_unpacklo_epi64(a[4 * g + 1], a[4 * g + 3]);
        b[4 * g + 3] = _mm512_unpackhi_epi64(a[4 * g + 1], a[4 * g + 3]);
    }
    for (int j = 0; j < 4; j++) { /* out[4k + j] chunk g: b[4g + j]'s chunk k */
        const __m512i c0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x44), c1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xEE);
        const __m512i c2 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x44);
        const __m512i c3 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xEE);
        out[j] = _mm512_shuffle_i32x4(c0, c2, 0x88);
        out[4 + j] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
        out[8 + j] = _mm512_shuffle_i32x4(c1, c3, 0x88);
        out[12 + j] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
    }
}

/* A query head quantized as the int8 pool's rows are (kernels.attention.quantize_kv): int8 values
   round(q / scale) with scale = max|q| / 127, and their sum, which the VNNI scores need (below).
   dim is a multiple of 16. Returns 0 when q is not finite (the caller then takes the bf16 path,
   which propagates it). Vector code: a scalar max loop here was 8% of the scores' time. */
static inline int quantize_q_i8(const float *q, int64_t dim, int8_t *out, float *scale, int32_t *sum) {
    const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    __m512 top = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t d = 0; d < dim; d += 16) {
        const __m512 a = _mm512_and_ps(_mm512_loadu_ps(q + d), magnitude);
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ); /* inf or NaN */
        top = _mm512_max_ps(top, a);
    }
    if (bad) return 0;
    const float most = _mm512_reduce_max_ps(top);
    const __m512 inv = _mm512_set1_ps(most > 0.0f ? 127.0f / most : 0.0f);
    __m512i total = _mm512_setzero_si512();
    for (int64_t d = 0; d < dim; d += 16) { /* |q| * 127 / max <= 127 before rounding: no clamp needed */
        const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(q + d), inv));
        _mm_storeu_si128((__m128i *)(out + d), _mm512_cvtepi32_epi8(v));
        total = _mm512_add_epi32(total, v);
    }
    *scale = most / 127.0f;
    *sum = _mm512_reduce_add_epi32(total);
    return 1;
}
#else
#define HAVE_VNNI 0
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define HAVE_DPBF16 1
/* AVX512-BF16's vdpbf16ps, for the bf16-q, bf16-pool kernel (DPBF16 below). Lane i of its float32
   accumulator adds the product of bf16 elements 2i + 1, then that of 2i, rounding after each add
   (as Intel documents it; checked to the bit on a Zen 4 over 1.6 million random lanes). A product
   of two bf16 is exact in float32, so these are the widened loops' additions: a q.k dot product
   needs no widening of K, and a weighted sum takes two tokens per instruction, token t in the odd
   element and t + 1 in the even one (p_t v_t added first, as the widened loop adds it). The widened
   q.k adds elements 2i, 2i + 1 of the first 32, then 32 + 2i, 33 + 2i, ...: the vectors after the
   first have their bf16 pairs swapped (q's once, K's by one rotate per 32 elements) so that the even
   element comes first there too (the first vector starts from zero, where the order does not
   matter). So the kernel gives the widened loops' bits (and the sums' trees below are theirs),
   except for denormal inputs, which vdpbf16ps reads as zero: 0 of 380,160 outputs differed over 72
   random steps (9 head layouts, block sizes 5 to 32, contexts of 1 to 2,100 tokens, soft cap or
   none). Cheaper in compute, in a hot single-thread loop at
   SmolLM2's shape (ns per token and kv head): q.k 6.4 -> 4.3, the weighted sum 4.0 -> 2.5. */
static inline __m512bh load_bf16x32(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

static inline __m512bh swap_bf16_pairs(__m512bh x) { return (__m512bh)_mm512_rol_epi32((__m512i)x, 16); }

/* q . k over dim (a multiple of 32) for one token: q's vectors after the first already swapped */
static inline __attribute__((always_inline)) f32x16 dot_dpbf16(const __m512bh *q, const uint16_t *k, int64_t dim) {
    __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), q[0], load_bf16x32(k));
    for (int64_t v = 1; v < dim / 32; v++) acc = _mm512_dpbf16_ps(acc, q[v], swap_bf16_pairs(load_bf16x32(k + 32 * v)));
    return acc;
}

/* n bf16-rounded probabilities -> (n + 1) / 2 pairs, token 2k in the high half of pair k and 2k + 1
   (0 past n) in the low half: the top halves of their float32 bits, which are exact (the low halves
   are zero), 32 tokens per vpermt2w */
typedef uint16_t u16x32 __attribute__((vector_size(64)));
static inline void bf16_prob_pairs(const float *p, int64_t n, uint32_t *pairs) {
    int64_t k = 0;
    for (; 2 * k + 32 <= n; k += 16) {
        u16x32 x, y;
        memcpy(&x, p + 2 * k, sizeof x);
        memcpy(&y, p + 2 * k + 16, sizeof y);
        const u16x32 z = __builtin_shufflevector(x, y, 3, 1, 7, 5, 11, 9, 15, 13, 19, 17, 23, 21, 27, 25, 31, 29, 35,
                                                 33, 39, 37, 43, 41, 47, 45, 51, 49, 55, 53, 59, 57, 63, 61);
        memcpy(pairs + k, &z, sizeof z);
    }
    for (; 2 * k < n; k++) {
        uint32_t hi, lo = 0;
        memcpy(&hi, p + 2 * k, sizeof hi);
        if (2 * k + 1 < n) memcpy(&lo, p + 2 * k + 1, sizeof lo);
        pairs[k] = (hi & 0xFFFF0000u) | lo >> 16;
    }
}

/* sum[c], sum[c + 1] += p_t v_t + p_t+1 v_t+1 over 32 elements of `hp` heads' sums: `row` is v_t,
   `next` v_t+1 (zero past the end), pk[j][k] head j's probabilities (bf16_prob_pairs). The rows
   interleave per 128-bit lane (vpunpck[lh]wd), so the sums come out in that order
   (unpair32_dpbf16 puts them back). */
static inline __attribute__((always_inline)) void dpbf16_two_tokens(__m512 sum[4][8], int64_t c, const uint16_t *row,
                                                                    __m512i next, const uint32_t *const pk[4],
                                                                    int64_t k, int hp) {
    const __m512i a = _mm512_loadu_si512((const void *)row);
    const __m512bh lo = (__m512bh)_mm512_unpacklo_epi16(next, a), hi = (__m512bh)_mm512_unpackhi_epi16(next, a);
    for (int j = 0; j < hp; j++) {
        const __m512bh p = (__m512bh)_mm512_set1_epi32((int)pk[j][k]);
        sum[j][c] = _mm512_dpbf16_ps(sum[j][c], lo, p);
        sum[j][c + 1] = _mm512_dpbf16_ps(sum[j][c + 1], hi, p);
    }
}

#else
#define HAVE_DPBF16 0
#endif

/* Blocks of a row are scattered through the pool, so the hardware prefetcher loses the stream at
   every block boundary. Asking for the block PREFETCH_BLOCKS ahead, into L2 (into L1 ran out of
   miss buffers), keeps DRAM busy: on cold KV, as in a real step where the weights have flushed the
   caches, 2,048 tokens went from about 130 to 95 us per layer (two threads). An int8 pool's blocks
   are about half the bytes, so it asks PREFETCH_BLOCKS_I8 ahead (about the same distance in bytes).
   Each item also asks for its first blocks up front (the loops' own requests start only that many
   blocks in), and phase 1 asks for the values of the blocks whose keys it reads, so that phase 3
   (the same items on the same thread: both are static splits of one item list) finds them in L2
   or L3 instead of DRAM: cold, SmolLM2's 2,048 tokens took about 10% less time with each, for both
   pool types (30 layers' pools in turn, 2 threads: bf16 about 120 -> 100 us, int8 95 -> 77). Only
   while the call's values fit comfortably in the caches
   (PREFETCH_VALUES_BYTES): at 32 rows of 4,096 tokens (50 MB of bf16 values) they were evicted
   before phase 3 and the step took 17% longer. */
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
static inline const void *stream_block(const BlockStream *b, int64_t t, int64_t t1, int prefetch) {
    if (prefetch && t + b->ahead * b->block_size < t1) prefetch_table_block(b, t / b->block_size + b->ahead);
    return b->base + (b->table[t / b->block_size] * b->kv_heads + b->head) * b->block_bytes;
}

static inline int64_t chunks_of(int64_t len, int64_t chunk) { return (len + chunk - 1) / chunk; }

/* scale one (row, query head)'s scores in place, after rounding them to bf16 in bf16 mode (as the
   reference's bf16 matmul rounds q.k), and soft-cap them; returns their maximum */
static float scale_scores(float *x, int64_t len, const Shape *s) {
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
    return top;
}

/* x = exp(x - top) in place; returns their sum */
static float exp_scores(float *x, int64_t len, float top) {
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < len; t++) {
        const float e = expf(x[t] - top);
        x[t] = e;
        total += e;
    }
    return total;
}

/* softmax one (row, query head)'s scores in place; in bf16 mode the probabilities are rounded to
   bf16, as the reference's bf16 matmul takes them */
static void softmax_row(float *x, int64_t len, const Shape *s) {
    const float inv = 1.0f / exp_scores(x, len, scale_scores(x, len, s));
    const int bf16 = s->bf16;
#pragma omp simd
    for (int64_t t = 0; t < len; t++) x[t] = bf16 ? round_bf16(x[t] * inv) : x[t] * inv;
}

/* Each instantiation defines the template's parameters; decode_attention_impl.h undefines them.
   bf16 and float32 pools: a row is the head's values, no scale. */
#define Q_T uint16_t
#define KV_T uint16_t
#define NAME grokd_decode_attention_bf16
#define DPBF16 HAVE_DPBF16
#define I8_DPBF16 0
#define I8_VNNI 0
#define ROW_WIDTH(dim) (dim)
#define KV_SCALED 0
#define ROW_SCALE(row, dim) 1.0f
#define PREFETCH_AHEAD PREFETCH_BLOCKS
#define WIDEN_Q1 bf16_to_f32
#define WIDEN_KV1 bf16_to_f32
#define WIDEN_Q32 widen32_bf16
#define WIDEN_KV32 widen32_bf16
#define UNPAIR32 unpair32_bf16
#define NARROW_Q1 f32_to_bf16
#include "decode_attention_impl.h"

#define Q_T float
#define KV_T float
#define NAME grokd_decode_attention_f32
#define DPBF16 0 /* the widened loops only */
#define I8_DPBF16 0
#define I8_VNNI 0
#define ROW_WIDTH(dim) (dim)
#define KV_SCALED 0
#define ROW_SCALE(row, dim) 1.0f
#define PREFETCH_AHEAD PREFETCH_BLOCKS
#define WIDEN_Q1(x) (x)
#define WIDEN_KV1(x) (x)
#define WIDEN_Q32 widen32_f32
#define WIDEN_KV32 widen32_f32
#define UNPAIR32 unpair32_f32
#define NARROW_Q1(x) (x)
#include "decode_attention_impl.h"

/* int8 pools: a row is the values, then the float32 scale (ROW_WIDTH in bytes). The values widen in
   order (no even/odd split to undo), so q widens in order too and the weighted sums come back in
   order (unpair32_f32 is a copy). */
#define Q_T uint16_t
#define KV_T int8_t
#define NAME grokd_decode_attention_bf16_i8
#define DPBF16 0
#define I8_DPBF16 HAVE_DPBF16 /* keys converted to bf16 once, scored on vdpbf16ps */
#define I8_VNNI HAVE_VNNI /* or q quantized, scored on vpdpbusd */
#define ROW_WIDTH(dim) ((dim) + 4)
#define KV_SCALED 1
#define ROW_SCALE(row, dim) row_scale_i8(row, dim)
#define PREFETCH_AHEAD PREFETCH_BLOCKS_I8
#define WIDEN_Q1 bf16_to_f32
#define WIDEN_KV1(x) ((float)(x))
#define WIDEN_Q32 widen32_bf16_in_order
#define WIDEN_KV32 widen32_i8
#define UNPAIR32 unpair32_f32
#define NARROW_Q1 f32_to_bf16
#include "decode_attention_impl.h"

#define Q_T float
#define KV_T int8_t
#define NAME grokd_decode_attention_f32_i8
#define DPBF16 0
#define I8_DPBF16 0
#define I8_VNNI 0
#define ROW_WIDTH(dim) ((dim) + 4)
#define KV_SCALED 1
#define ROW_SCALE(row, dim) row_scale_i8(row, dim)
#define PREFETCH_AHEAD PREFETCH_BLOCKS_I8
#define WIDEN_Q1(x) (x)
#define WIDEN_KV1(x) ((float)(x))
#define WIDEN_Q32 widen32_f32
#define WIDEN_KV32 widen32_i8
#define UNPAIR32 unpair32_f32
#define NARROW_Q1(x) (x)
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
