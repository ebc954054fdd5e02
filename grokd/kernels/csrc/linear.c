/* y = x . W^T for bf16 activations on the CPU, on torch's OpenMP team: bf16 weights on CPUs with
 * AVX512-BF16 (below), weight-only int8 on CPUs with AVX-512 (the second part of this file),
 * int8 weights against int16 activations on CPUs with AVX512-VNNI (the third part), and both
 * weight formats widened to float32 in 256-bit registers (the last part: the same packed layouts,
 * so one packing serves every tier): bf16 on CPUs with AVX2 and FMA but no AVX512-BF16, int8 on
 * CPUs with AVX2 and FMA but no AVX-512.
 *
 * Twin: torch.nn.functional.linear (kernels/cpu_linear.py packs the weights and calls this; its
 * tests compare the two). Why: at decode batch sizes (1-32 rows) oneDNN's packed bf16 GEMM streams
 * the weights slower than the machine can read them at one row and is slower at 16-32 rows
 * (benchmarks/RESULTS.md#cpu-projections); a weight-stationary micro-kernel built on
 * vdpbf16ps, which multiplies pairs of bf16 and adds them into float32, does better there.
 *
 * Weights are packed once (kernels/cpu_linear.py) into panels of 16 output columns, each a run of
 * k-pairs: packed[p][kp][i][j] = W[16 p + i][2 kp + j], so that one 64-byte load gives the 16
 * columns' weights for two input features, the operand vdpbf16ps wants. A tile is 2 panels (32
 * columns) by up to 8 rows: 16 float32 accumulators stay in registers while the k loop streams the
 * two panels once per 8 rows. Threads split the tiles' column groups.
 *
 * Prefill (PREFILL_ROWS rows or more, n a multiple of 64) takes a wider tile instead: 4 panels by up
 * to 6 rows, 24 accumulators, so that each broadcast of x feeds four vdpbf16ps instead of two, and
 * the threads split the rows (every column group has work for both): close to the peak that
 * vdpbf16ps itself reaches (benchmarks/RESULTS.md#cpu-projections, benchmarks/bf16_peak.c).
 *
 * Numerics: the products are exact in float32 and summed in float32 two at a time (vdpbf16ps, with
 * denormal inputs read as zero, as oneDNN's bf16 kernels on the same instruction do), then rounded
 * once to bf16 (nearest even).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "grokd.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define GROKD_DPBF16 1
#elif defined(__AVX2__) && defined(__FMA__)
#define GROKD_WIDEN_AVX2 1 /* bf16 weights widened to float32 in registers (the last part of this file) */
#endif
#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define GROKD_INT8_AVX2 1 /* int8 weights widened to float32 in registers (the last part of this file) */
#endif

#define PANEL 16
#define MAX_ROWS 8
#define WIDE_ROWS 6     /* rows of a prefill tile (4 panels: 24 sums, 4 weight vectors, 1 broadcast) */
#define PREFILL_ROWS 64 /* from this many rows on, the prefill tile and a split by rows */

/* TILE(R) with R a constant 1..MAX_ROWS, one specialisation per row count, so that each keeps its
   float32 sums in registers */
#define FOR_ROW_COUNT(rows, TILE)                                                                      \
    switch (rows) {                                                                                    \
    case 1: TILE(1); break;                                                                            \
    case 2: TILE(2); break;                                                                            \
    case 3: TILE(3); break;                                                                            \
    case 4: TILE(4); break;                                                                            \
    case 5: TILE(5); break;                                                                            \
    case 6: TILE(6); break;                                                                            \
    case 7: TILE(7); break;                                                                            \
    default: TILE(8); break;                                                                           \
    }

/* 1 when this build has a kernel (the CPU has AVX512-BF16, or AVX2 and FMA: the last part of this
   file), else 0 and callers keep oneDNN or PyTorch */
int grokd_linear_bf16_available(void) {
#if defined(GROKD_DPBF16) || defined(GROKD_WIDEN_AVX2)
    return 1;
#else
    return 0;
#endif
}

#ifdef GROKD_DPBF16
/* `rows` (1..MAX_ROWS, a constant in each caller) rows of x times two panels: out[rows, 32] */
static inline __attribute__((always_inline)) void tile(const uint16_t *x, int64_t x_stride, const uint16_t *w0,
                                                       const uint16_t *w1, int64_t pairs, uint16_t *out,
                                                       int64_t out_stride, const uint16_t *next, const int rows) {
    __m512 acc0[MAX_ROWS], acc1[MAX_ROWS];
    for (int m = 0; m < rows; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < pairs; kp++) {
        if (next) { /* the thread's next two panels, one cache line each per k-pair, into L2 */
            _mm_prefetch((const char *)(next + kp * 2 * PANEL), _MM_HINT_T1);
            _mm_prefetch((const char *)(next + (pairs + kp) * 2 * PANEL), _MM_HINT_T1);
        }
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(w0 + kp * 2 * PANEL);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(w1 + kp * 2 * PANEL);
        for (int m = 0; m < rows; m++) {
            int32_t pair;
            memcpy(&pair, x + m * x_stride + 2 * kp, sizeof pair);
            const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
            acc0[m] = _mm512_dpbf16_ps(acc0[m], a, b0);
            acc1[m] = _mm512_dpbf16_ps(acc1[m], a, b1);
        }
    }
    for (int m = 0; m < rows; m++) {
        const __m256bh lo = _mm512_cvtneps_pbh(acc0[m]), hi = _mm512_cvtneps_pbh(acc1[m]);
        memcpy(out + m * out_stride, &lo, sizeof lo);
        memcpy(out + m * out_stride + PANEL, &hi, sizeof hi);
    }
}

static void tile_rows(const uint16_t *x, int64_t x_stride, const uint16_t *w0, const uint16_t *w1, int64_t pairs,
                      uint16_t *out, int64_t out_stride, const uint16_t *next, int rows) {
#define BF16_TILE(R) tile(x, x_stride, w0, w1, pairs, out, out_stride, next, R)
    FOR_ROW_COUNT(rows, BF16_TILE);
#undef BF16_TILE
}

/* `rows` (1..WIDE_ROWS, a constant in each caller) rows of x times the four panels from w:
   out[rows, 64] */
static inline __attribute__((always_inline)) void wide_tile(const uint16_t *x, int64_t x_stride, const uint16_t *w,
                                                            int64_t panel_elems, int64_t pairs, uint16_t *out,
                                                            int64_t out_stride, const int rows) {
    __m512 acc[WIDE_ROWS][4];
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < 4; j++) acc[m][j] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < pairs; kp++) {
        __m512bh b[4];
        for (int j = 0; j < 4; j++) b[j] = (__m512bh)_mm512_loadu_si512(w + j * panel_elems + kp * 2 * PANEL);
        for (int m = 0; m < rows; m++) {
            int32_t pair;
            memcpy(&pair, x + m * x_stride + 2 * kp, sizeof pair);
            const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
            for (int j = 0; j < 4; j++) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], a, b[j]);
        }
    }
    for (int m = 0; m < rows; m++)
        for (int j = 0; j < 4; j++) {
            const __m256bh h = _mm512_cvtneps_pbh(acc[m][j]);
            memcpy(out + m * out_stride + j * PANEL, &h, sizeof h);
        }
}

static void wide_tile_rows(const uint16_t *x, int64_t x_stride, const uint16_t *w, int64_t panel_elems,
                           int64_t pairs, uint16_t *out, int64_t out_stride, int rows) {
#define WIDE_TILE(R) wide_tile(x, x_stride, w, panel_elems, pairs, out, out_stride, R)
    switch (rows) {
    case 1: WIDE_TILE(1); break;
    case 2: WIDE_TILE(2); break;
    case 3: WIDE_TILE(3); break;
    case 4: WIDE_TILE(4); break;
    case 5: WIDE_TILE(5); break;
    default: WIDE_TILE(6); break;
    }
#undef WIDE_TILE
}
#endif

/* x [m, k] (row stride x_stride), packed [n / 16, k / 2, 16, 2], out [m, n] contiguous; n a multiple
   of 32 and k of 2 (the caller checks). Returns 0, or 1 when this build has no kernel. */
#ifdef GROKD_WIDEN_AVX2
static int linear_bf16_avx2(const uint16_t *x, int64_t m, int64_t x_stride, const uint16_t *packed, int64_t n,
                            int64_t k, uint16_t *out, int num_threads);
#endif

int grokd_linear_bf16(const uint16_t *x, int64_t m, int64_t x_stride, const uint16_t *packed, int64_t n,
                      int64_t k, uint16_t *out, int num_threads) {
#if defined(GROKD_WIDEN_AVX2)
    return linear_bf16_avx2(x, m, x_stride, packed, n, k, out, num_threads);
#elif defined(GROKD_DPBF16)
    const int64_t pairs = k / 2, groups = n / (2 * PANEL), panel_elems = pairs * 2 * PANEL;
#pragma omp parallel num_threads(num_threads)
    {
#ifdef _OPENMP
        const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
#else
        const int64_t threads = 1, t = 0;
#endif
        if (m >= PREFILL_ROWS && n % (4 * PANEL) == 0) { /* prefill: each thread its rows, all columns */
            const int64_t first = m * t / threads, last = m * (t + 1) / threads;
            for (int64_t g = 0; g < n / (4 * PANEL); g++) /* a group's four panels stay in L2 over the rows */
                for (int64_t r = first; r < last; r += WIDE_ROWS) {
                    const int rows = last - r < WIDE_ROWS ? (int)(last - r) : WIDE_ROWS;
                    wide_tile_rows(x + r * x_stride, x_stride, packed + 4 * g * panel_elems, panel_elems, pairs,
                                   out + r * n + g * 4 * PANEL, n, rows);
                }
        } else { /* the static split of column groups, written out so that each thread knows where its share ends */
            const int64_t first = groups * t / threads, last = groups * (t + 1) / threads;
            for (int64_t g = first; g < last; g++) {
                const uint16_t *w0 = packed + 2 * g * panel_elems, *w1 = w0 + panel_elems;
                const uint16_t *next = m > 1 && g + 1 < last ? w0 + 2 * panel_elems : NULL; /* one row: the hardware prefetcher keeps up */
                for (int64_t r = 0; r < m; r += MAX_ROWS) {
                    const int rows = m - r < MAX_ROWS ? (int)(m - r) : MAX_ROWS;
                    tile_rows(x + r * x_stride, x_stride, w0, w1, pairs, out + r * n + g * 2 * PANEL, n,
                              r == 0 ? next : NULL, rows);
                }
            }
        }
    }
    return 0;
#else
    (void)x, (void)m, (void)x_stride, (void)packed, (void)n, (void)k, (void)out, (void)num_threads;
    return 1;
#endif
}

/* ---- weight-only int8: y = (x . Q^T) * scales, for bf16 x and int8 Q with one float32 scale per
 * output column. Q is packed as [n / 16][k][16] (one 16-byte load holds a k's 16 columns); each is
 * widened to float32 in registers and multiplied into float32 sums with fused multiply-adds, so a
 * step reads one byte per weight. Twin: kernels.linear.per_channel_int8_reference (dequantise, then
 * F.linear); the sums differ only in order, and the scale is applied once to each sum. */

int grokd_linear_int8_available(void) {
#if defined(__AVX512F__) || defined(GROKD_INT8_AVX2)
    return 1;
#else
    return 0;
#endif
}

#ifdef __AVX512F__
/* xf: the tile's rows of x already widened to float32 ([rows, k]), so each multiply-add takes its
   activation as a broadcast memory operand; the k loop is unrolled by two with separate sums, so
   one row still has four independent chains in flight */
static inline __attribute__((always_inline)) void tile_int8(const float *xf, const int8_t *q0, const int8_t *q1,
                                                            const float *scales, int64_t k, uint16_t *out,
                                                            int64_t out_stride, const int rows) {
    __m512 acc0[MAX_ROWS], acc1[MAX_ROWS], odd0[MAX_ROWS], odd1[MAX_ROWS];
    for (int m = 0; m < rows; m++) acc0[m] = acc1[m] = odd0[m] = odd1[m] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
        const __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q0 + i * PANEL))));
        const __m512 a1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q1 + i * PANEL))));
        const __m512 b0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q0 + (i + 1) * PANEL))));
        const __m512 b1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q1 + (i + 1) * PANEL))));
        for (int m = 0; m < rows; m++) {
            const __m512 xa = _mm512_set1_ps(xf[m * k + i]), xb = _mm512_set1_ps(xf[m * k + i + 1]);
            acc0[m] = _mm512_fmadd_ps(xa, a0, acc0[m]);
            acc1[m] = _mm512_fmadd_ps(xa, a1, acc1[m]);
            odd0[m] = _mm512_fmadd_ps(xb, b0, odd0[m]);
            odd1[m] = _mm512_fmadd_ps(xb, b1, odd1[m]);
        }
    }
    for (; i < k; i++) {
        const __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q0 + i * PANEL))));
        const __m512 a1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q1 + i * PANEL))));
        for (int m = 0; m < rows; m++) {
            const __m512 xa = _mm512_set1_ps(xf[m * k + i]);
            acc0[m] = _mm512_fmadd_ps(xa, a0, acc0[m]);
            acc1[m] = _mm512_fmadd_ps(xa, a1, acc1[m]);
        }
    }
    const __m512 s0 = _mm512_loadu_ps(scales), s1 = _mm512_loadu_ps(scales + PANEL);
    for (int m = 0; m < rows; m++) {
        uint16_t lo[PANEL], hi[PANEL];
        float f0[PANEL], f1[PANEL];
        _mm512_storeu_ps(f0, _mm512_mul_ps(_mm512_add_ps(acc0[m], odd0[m]), s0));
        _mm512_storeu_ps(f1, _mm512_mul_ps(_mm512_add_ps(acc1[m], odd1[m]), s1));
        for (int j = 0; j < PANEL; j++) lo[j] = f32_to_bf16(f0[j]), hi[j] = f32_to_bf16(f1[j]);
        memcpy(out + m * out_stride, lo, sizeof lo);
        memcpy(out + m * out_stride + PANEL, hi, sizeof hi);
    }
}

static void tile_int8_rows(const float *xf, const int8_t *q0, const int8_t *q1, const float *scales, int64_t k,
                           uint16_t *out, int64_t out_stride, int rows) {
#define INT8_TILE(R) tile_int8(xf, q0, q1, scales, k, out, out_stride, R)
    FOR_ROW_COUNT(rows, INT8_TILE);
#undef INT8_TILE
}
#endif

/* x [m, k] bf16 (row stride x_stride), packed [n / 16, k, 16] int8, scales [n] float32, out [m, n]
   bf16 contiguous; n a multiple of 32 (the caller checks). Returns 0, 1 without AVX-512 or AVX2, or
   2 when scratch memory could not be allocated (nothing written). */
#ifdef GROKD_INT8_AVX2
static int linear_int8_avx2(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                            int64_t n, int64_t k, uint16_t *out, int num_threads);
#endif

int grokd_linear_int8(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                      int64_t n, int64_t k, uint16_t *out, int num_threads) {
#if defined(GROKD_INT8_AVX2)
    return linear_int8_avx2(x, m, x_stride, packed, scales, n, k, out, num_threads);
#elif defined(__AVX512F__)
    const int64_t groups = n / (2 * PANEL), panel_elems = k * PANEL;
    float *xf = malloc(sizeof(float) * (m * k + 1)); /* x widened once, not once per column group */
    if (!xf) return 2;
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < k; i++) xf[r * k + i] = bf16_to_f32(x[r * x_stride + i]);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int8_t *q0 = packed + 2 * g * panel_elems, *q1 = q0 + panel_elems;
        for (int64_t r = 0; r < m; r += MAX_ROWS) {
            const int rows = m - r < MAX_ROWS ? (int)(m - r) : MAX_ROWS;
            tile_int8_rows(xf + r * k, q0, q1, scales + g * 2 * PANEL, k, out + r * n + g * 2 * PANEL, n, rows);
        }
    }
    free(xf);
    return 0;
#else
    (void)x, (void)m, (void)x_stride, (void)packed, (void)scales, (void)n, (void)k, (void)out, (void)num_threads;
    return 1;
#endif
}

/* ---- weight-only int8 on AVX512-VNNI: the bf16 activations converted to int16 per block of
 * X16_BLOCK features (scale max|x| / 32767: finer than bf16's own 8 significant bits, so the result
 * is the weight-only kernel's to within float32 rounding), and the weights packed as
 * [n / 16][kp / 2][16][2] int8 (kp: k rounded up to 2, zero weights), so that one 32-byte load,
 * widened to int16, gives 16 columns' weights for 2 features: vpdpwssd's operand, which adds their
 * two products into each int32 lane exactly. Each block's integer sums are scaled into float32 sums
 * by the block's scale; the column's weight scale comes last. Against the weight-only kernel above:
 * 32 products per instruction instead of 16, and one widening per 32 weights instead of two
 * conversions per 16. (llama.cpp quantizes activations to int8 per 32 for vpdpbusd, 64 products
 * per instruction; measured here that flipped SmolLM2's greedy choice on a chat prompt where these
 * weights in float32 and the weight-only kernel agree, so the activations keep 16 bits.)
 * Twin: kernels.linear.per_channel_int8_reference, as for the kernel above. */

#define X16_BLOCK 128
#define X16_ROWS 8

int grokd_linear_int8_vnni_available(void) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    return 1;
#else
    return 0;
#endif
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__)
/* rows of xq [rows, kp] (int16), xs [rows, blocks] scales, against two panels q0, q1 ([kp / 2][16][2]
   int8 each): 32 columns' float32 sums, scaled, to out. 128 products of at most 127 * 32767 per
   block: within int32. Up to 8 rows: the 16 integer sums stay in registers through a block, the
   float32 ones are touched once per block (8 rows against 4: 16 rows 486-550 -> 638-656 tok/s). */
static inline __attribute__((always_inline)) void tile_x16(const int16_t *xq, const float *xs, int64_t kp,
                                                           const int8_t *q0, const int8_t *q1, const float *scales,
                                                           uint16_t *out, int64_t out_stride, const int rows) {
    const int64_t blocks = (kp + X16_BLOCK - 1) / X16_BLOCK;
    __m512 acc[X16_ROWS][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t end = (b + 1) * X16_BLOCK < kp ? (b + 1) * X16_BLOCK : kp;
        __m512i sum[X16_ROWS][2];
        for (int r = 0; r < rows; r++) sum[r][0] = sum[r][1] = _mm512_setzero_si512();
        for (int64_t i = b * X16_BLOCK; i < end; i += 2) {
            const __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q0 + i * 16)));
            const __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q1 + i * 16)));
            for (int r = 0; r < rows; r++) {
                int32_t pair;
                memcpy(&pair, xq + r * kp + i, sizeof pair);
                const __m512i xv = _mm512_set1_epi32(pair);
                sum[r][0] = _mm512_dpwssd_epi32(sum[r][0], w0, xv);
                sum[r][1] = _mm512_dpwssd_epi32(sum[r][1], w1, xv);
            }
        }
        for (int r = 0; r < rows; r++) {
            const __m512 scale = _mm512_set1_ps(xs[r * blocks + b]);
            acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][0]), scale, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][1]), scale, acc[r][1]);
        }
    }
    const __m512 s0 = _mm512_loadu_ps(scales), s1 = _mm512_loadu_ps(scales + PANEL);
    for (int r = 0; r < rows; r++) {
        uint16_t lo[PANEL], hi[PANEL];
        float f0[PANEL], f1[PANEL];
        _mm512_storeu_ps(f0, _mm512_mul_ps(acc[r][0], s0));
        _mm512_storeu_ps(f1, _mm512_mul_ps(acc[r][1], s1));
        for (int j = 0; j < PANEL; j++) lo[j] = f32_to_bf16(f0[j]), hi[j] = f32_to_bf16(f1[j]);
        memcpy(out + r * out_stride, lo, sizeof lo);
        memcpy(out + r * out_stride + PANEL, hi, sizeof hi);
    }
}

static void tile_x16_rows(const int16_t *xq, const float *xs, int64_t kp, const int8_t *q0, const int8_t *q1,
                          const float *scales, uint16_t *out, int64_t out_stride, int rows) {
#define X16_TILE(R) tile_x16(xq, xs, kp, q0, q1, scales, out, out_stride, R)
    FOR_ROW_COUNT(rows, X16_TILE);
#undef X16_TILE
}
#endif

/* x [m, k] bf16 (row stride x_stride), packed [n / 16, kp / 2, 16, 2] int8, scales [n] float32,
   out [m, n] bf16 contiguous; n a multiple of 32 (the caller checks). Returns 0, 1 without
   AVX512-VNNI, or 2 when scratch memory could not be allocated (nothing written). */
int grokd_linear_int8_vnni(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                           int64_t n, int64_t k, uint16_t *out, int num_threads) {
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    const int64_t kp = (k + 1) / 2 * 2, blocks = (kp + X16_BLOCK - 1) / X16_BLOCK;
    const int64_t groups = n / (2 * PANEL), panel_bytes = kp * PANEL;
    int16_t *xq = malloc(sizeof(int16_t) * (m * kp + 1));
    float *xs = malloc(sizeof(float) * (m * blocks + 1));
    if (!xq || !xs) {
        free(xq), free(xs);
        return 2;
    }
    for (int64_t r = 0; r < m; r++) /* each block of each row: int16 values and their scale */
        for (int64_t b = 0; b < blocks; b++) {
            __m512 v[X16_BLOCK / 16], top = _mm512_setzero_ps();
            __mmask16 bad = 0;
            for (int h = 0; h < X16_BLOCK / 16; h++) { /* the features past k read as zeros */
                const int64_t i = b * X16_BLOCK + 16 * h, left = k - i;
                const __mmask16 live = left >= 16 ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, x + r * x_stride + i));
                v[h] = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
                bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(v[h]), _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
                top = _mm512_max_ps(top, _mm512_abs_ps(v[h]));
            }
            /* an inf or NaN in the block: its scale is NaN, so the row's outputs are NaN, as the
               reference's would be, instead of a quantization that silently drops it */
            const float most = bad ? NAN : _mm512_reduce_max_ps(top);
            const __m512 inv = _mm512_set1_ps(most > 0.0f ? 32767.0f / most : 0.0f);
            for (int h = 0; h < X16_BLOCK / 16; h++) {
                const int64_t i = b * X16_BLOCK + 16 * h, left = kp - i;
                if (left > 0) /* kp is even: the last block may end part way */
                    _mm256_mask_storeu_epi16(xq + r * kp + i, left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1),
                                             _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(v[h], inv))));
            }
            xs[r * blocks + b] = most / 32767.0f;
        }
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int8_t *q0 = packed + 2 * g * panel_bytes, *q1 = q0 + panel_bytes;
        for (int64_t r = 0; r < m; r += X16_ROWS) {
            const int rows = m - r < X16_ROWS ? (int)(m - r) : X16_ROWS;
            tile_x16_rows(xq + r * kp, xs + r * blocks, kp, q0, q1, scales + g * 2 * PANEL, out + r * n + g * 2 * PANEL,
                          n, rows);
        }
    }
    free(xq), free(xs);
    return 0;
#else
    (void)x, (void)m, (void)x_stride, (void)packed, (void)scales, (void)n, (void)k, (void)out, (void)num_threads;
    return 1;
#endif
}

/* ---- AVX2 with FMA, no AVX512-BF16: both weight formats widened to float32 in registers and
 * multiplied into float32 sums with 256-bit fused multiply-adds. The bytes read stay those of the
 * packed weights (two per bf16 weight, one per int8 weight), so a decode step stays bound by memory
 * bandwidth, as on the AVX-512 tiers; the packings are the ones above.
 *
 * bf16 panels [n / 16][k / 2][16][2]: one 32-byte load holds 8 columns' pairs of features, a 32-bit
 * lane per column with feature 2 kp in its low half and 2 kp + 1 in its high half, so a shift left
 * by 16 gives the first feature's float32 weights and a mask of the low half the second's, with no
 * shuffle (decode_attention.c widens its bf16 pool the same way). int8 panels [n / 16][k][16]: 8
 * bytes sign-extended and converted give 8 columns. A tile is one panel (16 columns, two vectors)
 * by up to AVX2_ROWS rows of x, widened to float32 once per call: 4 * AVX2_ROWS sums (even and odd
 * features apart), the widened weights and one broadcast fit the 16 registers. Threads split the
 * panels.
 *
 * Numerics: products exact in float32 (bf16 times bf16; int8 times bf16 in float32 after the
 * activation's widening), summed in float32 by fused multiply-adds (the int8 ones scaled once at
 * the end), rounded once to bf16. Against vdpbf16ps only the summation order differs, and
 * denormal inputs are not flushed. Twins: F.linear and kernels.linear.per_channel_int8_reference. */

#if defined(GROKD_WIDEN_AVX2) || defined(GROKD_INT8_AVX2)
#define AVX2_ROWS 3 /* 4 sums per row: 12 of the 16 registers, 2 widened weights and 1 broadcast beside */

#define FOR_ROW_COUNT3(rows, TILE)                                                                     \
    switch (rows) {                                                                                    \
    case 1: TILE(1); break;                                                                            \
    case 2: TILE(2); break;                                                                            \
    default: TILE(3); break;                                                                           \
    }

/* x [m, k] bf16 (row stride x_stride) widened to float32 [m, k]; NULL when it cannot be allocated */
static float *widen_rows(const uint16_t *x, int64_t m, int64_t x_stride, int64_t k) {
    float *xf = malloc(sizeof(float) * (m * k + 1));
    if (xf)
        for (int64_t r = 0; r < m; r++)
            for (int64_t i = 0; i < k; i++) xf[r * k + i] = bf16_to_f32(x[r * x_stride + i]);
    return xf;
}

/* 8 float32 rounded to bf16 as f32_to_bf16 does (nearest even, NaN kept quiet), all in registers:
   a round trip through memory makes gcc keep a tile's sums on the stack through its whole k loop */
static inline __attribute__((always_inline)) __m128i bf16_8(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd), 16);
    const __m256i quiet_nan = _mm256_srli_epi32(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), 16);
    const __m256i r = _mm256_blendv_epi8(rounded, quiet_nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)); /* each lane <= 0xFFFF */
}

/* two vectors of float32 sums (16 columns), times the columns' scales when given, rounded to bf16 */
static inline __attribute__((always_inline)) void store_bf16_16(uint16_t *out, __m256 lo, __m256 hi,
                                                                const float *scales) {
    if (scales) lo = _mm256_mul_ps(lo, _mm256_loadu_ps(scales)), hi = _mm256_mul_ps(hi, _mm256_loadu_ps(scales + 8));
    _mm_storeu_si128((__m128i *)out, bf16_8(lo));
    _mm_storeu_si128((__m128i *)(out + 8), bf16_8(hi));
}
#endif

#ifdef GROKD_WIDEN_AVX2
/* `rows` (1..AVX2_ROWS, a constant in each caller) rows of xf times one bf16 panel: out[rows, 16].
   Each row keeps the even features' sums apart from the odd ones' (four chains of one fused
   multiply-add per pair, where two chains of two would leave a single row waiting on latency),
   the same for every row count, so a row's result never depends on the rows beside it. */
static inline __attribute__((always_inline)) void tile_bf16_avx2(const float *xf, int64_t k, const uint16_t *w,
                                                                 uint16_t *out, int64_t out_stride, const int rows) {
    __m256 lo[AVX2_ROWS], hi[AVX2_ROWS], lo_odd[AVX2_ROWS], hi_odd[AVX2_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = lo_odd[r] = hi_odd[r] = _mm256_setzero_ps();
    const __m256i high_half = _mm256_set1_epi32((int)0xFFFF0000u);
    for (int64_t kp = 0; kp < k / 2; kp++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(w + kp * 2 * PANEL));         /* columns 0-7 */
        const __m256i b = _mm256_loadu_si256((const __m256i *)(w + kp * 2 * PANEL + PANEL)); /* columns 8-15 */
        const __m256 a0 = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
        const __m256 b0 = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 x0 = _mm256_broadcast_ss(xf + r * k + 2 * kp);
            lo[r] = _mm256_fmadd_ps(x0, a0, lo[r]);
            hi[r] = _mm256_fmadd_ps(x0, b0, hi[r]);
        }
        const __m256 a1 = _mm256_castsi256_ps(_mm256_and_si256(a, high_half));
        const __m256 b1 = _mm256_castsi256_ps(_mm256_and_si256(b, high_half));
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 x1 = _mm256_broadcast_ss(xf + r * k + 2 * kp + 1);
            lo_odd[r] = _mm256_fmadd_ps(x1, a1, lo_odd[r]);
            hi_odd[r] = _mm256_fmadd_ps(x1, b1, hi_odd[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        store_bf16_16(out + r * out_stride, _mm256_add_ps(lo[r], lo_odd[r]), _mm256_add_ps(hi[r], hi_odd[r]), NULL);
}

static void tile_bf16_avx2_rows(const float *xf, int64_t k, const uint16_t *w, uint16_t *out, int64_t out_stride,
                                int rows) {
#define AVX2_BF16_TILE(R) tile_bf16_avx2(xf, k, w, out, out_stride, R)
    FOR_ROW_COUNT3(rows, AVX2_BF16_TILE);
#undef AVX2_BF16_TILE
}

/* grokd_linear_bf16 on AVX2: the same arguments; returns 0, or 2 when scratch memory could not be
   allocated (nothing written) */
static int linear_bf16_avx2(const uint16_t *x, int64_t m, int64_t x_stride, const uint16_t *packed, int64_t n,
                            int64_t k, uint16_t *out, int num_threads) {
    const int64_t panels = n / PANEL, panel_elems = k * PANEL;
    float *xf = widen_rows(x, m, x_stride, k);
    if (!xf) return 2;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t p = 0; p < panels; p++)
        for (int64_t r = 0; r < m; r += AVX2_ROWS) {
            const int rows = m - r < AVX2_ROWS ? (int)(m - r) : AVX2_ROWS;
            tile_bf16_avx2_rows(xf + r * k, k, packed + p * panel_elems, out + r * n + p * PANEL, n, rows);
        }
    free(xf);
    return 0;
}
#endif

#ifdef GROKD_INT8_AVX2
/* `rows` (1..AVX2_ROWS, a constant in each caller) rows of xf times one int8 panel, scaled: out[rows, 16].
   Even and odd features summed apart, as in tile_bf16_avx2 and for the same reasons. */
static inline __attribute__((always_inline)) __m256 widen8_i8(const int8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static inline __attribute__((always_inline)) void tile_int8_avx2(const float *xf, int64_t k, const int8_t *q,
                                                                 const float *scales, uint16_t *out,
                                                                 int64_t out_stride, const int rows) {
    __m256 lo[AVX2_ROWS], hi[AVX2_ROWS], lo_odd[AVX2_ROWS], hi_odd[AVX2_ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = lo_odd[r] = hi_odd[r] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
        const __m256 a0 = widen8_i8(q + i * PANEL), b0 = widen8_i8(q + i * PANEL + 8);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 x0 = _mm256_broadcast_ss(xf + r * k + i);
            lo[r] = _mm256_fmadd_ps(x0, a0, lo[r]);
            hi[r] = _mm256_fmadd_ps(x0, b0, hi[r]);
        }
        const __m256 a1 = widen8_i8(q + (i + 1) * PANEL), b1 = widen8_i8(q + (i + 1) * PANEL + 8);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 x1 = _mm256_broadcast_ss(xf + r * k + i + 1);
            lo_odd[r] = _mm256_fmadd_ps(x1, a1, lo_odd[r]);
            hi_odd[r] = _mm256_fmadd_ps(x1, b1, hi_odd[r]);
        }
    }
    if (i < k) { /* an odd number of features: the last one into the even sums */
        const __m256 a0 = widen8_i8(q + i * PANEL), b0 = widen8_i8(q + i * PANEL + 8);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 x0 = _mm256_broadcast_ss(xf + r * k + i);
            lo[r] = _mm256_fmadd_ps(x0, a0, lo[r]);
            hi[r] = _mm256_fmadd_ps(x0, b0, hi[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
        store_bf16_16(out + r * out_stride, _mm256_add_ps(lo[r], lo_odd[r]), _mm256_add_ps(hi[r], hi_odd[r]), scales);
}

static void tile_int8_avx2_rows(const float *xf, int64_t k, const int8_t *q, const float *scales, uint16_t *out,
                                int64_t out_stride, int rows) {
#define AVX2_INT8_TILE(R) tile_int8_avx2(xf, k, q, scales, out, out_stride, R)
    FOR_ROW_COUNT3(rows, AVX2_INT8_TILE);
#undef AVX2_INT8_TILE
}

/* grokd_linear_int8 on AVX2: the same arguments and return values */
static int linear_int8_avx2(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                            int64_t n, int64_t k, uint16_t *out, int num_threads) {
    const int64_t panels = n / PANEL, panel_elems = k * PANEL;
    float *xf = widen_rows(x, m, x_stride, k);
    if (!xf) return 2;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t p = 0; p < panels; p++)
        for (int64_t r = 0; r < m; r += AVX2_ROWS) {
            const int rows = m - r < AVX2_ROWS ? (int)(m - r) : AVX2_ROWS;
            tile_int8_avx2_rows(xf + r * k, k, packed + p * panel_elems, scales + p * PANEL, out + r * n + p * PANEL,
                                n, rows);
        }
    free(xf);
    return 0;
}
#endif
