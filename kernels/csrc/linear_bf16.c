/* y = x . W^T for bf16 activations and weights on CPUs with AVX512-BF16, on torch's OpenMP team.
 *
 * Twin: torch.nn.functional.linear (kernels/cpu_linear.py packs the weights and calls this; its
 * tests compare the two). Why: at decode batch sizes (1-32 rows) oneDNN's bf16 GEMM reaches 180-380
 * GFLOP/s on this machine's two cores, about a third of the bf16 peak (benchmarks/RESULTS.md,
 * session 4); a weight-stationary micro-kernel built on vdpbf16ps, which multiplies pairs of bf16
 * and adds them into float32, does better there.
 *
 * Weights are packed once (kernels/cpu_linear.py) into panels of 16 output columns, each a run of
 * k-pairs: packed[p][kp][i][j] = W[16 p + i][2 kp + j], so that one 64-byte load gives the 16
 * columns' weights for two input features, the operand vdpbf16ps wants. A tile is 2 panels (32
 * columns) by up to 8 rows: 16 float32 accumulators stay in registers while the k loop streams the
 * two panels once per 8 rows. Threads split the tiles' column groups.
 *
 * Numerics: the products are exact in float32 and summed in float32 two at a time (vdpbf16ps, with
 * denormal inputs read as zero, as oneDNN's bf16 kernels on the same instruction do), then rounded
 * once to bf16 (nearest even).
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define GROKD_DPBF16 1
#endif

#define PANEL 16
#define MAX_ROWS 8

/* 1 when this build has the kernel (the CPU has AVX512-BF16), else 0 and callers keep oneDNN */
int grokd_linear_bf16_available(void) {
#ifdef GROKD_DPBF16
    return 1;
#else
    return 0;
#endif
}

#ifdef GROKD_DPBF16
/* `rows` (1..MAX_ROWS, a constant in each caller) rows of x times two panels: out[rows, 32] */
static inline __attribute__((always_inline)) void tile(const uint16_t *x, int64_t x_stride, const uint16_t *w0,
                                                       const uint16_t *w1, int64_t pairs, uint16_t *out,
                                                       int64_t out_stride, const int rows) {
    __m512 acc0[MAX_ROWS], acc1[MAX_ROWS];
    for (int m = 0; m < rows; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < pairs; kp++) {
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
                      uint16_t *out, int64_t out_stride, int rows) {
    switch (rows) { /* one specialisation per row count, so the accumulators are registers */
    case 1: tile(x, x_stride, w0, w1, pairs, out, out_stride, 1); break;
    case 2: tile(x, x_stride, w0, w1, pairs, out, out_stride, 2); break;
    case 3: tile(x, x_stride, w0, w1, pairs, out, out_stride, 3); break;
    case 4: tile(x, x_stride, w0, w1, pairs, out, out_stride, 4); break;
    case 5: tile(x, x_stride, w0, w1, pairs, out, out_stride, 5); break;
    case 6: tile(x, x_stride, w0, w1, pairs, out, out_stride, 6); break;
    case 7: tile(x, x_stride, w0, w1, pairs, out, out_stride, 7); break;
    default: tile(x, x_stride, w0, w1, pairs, out, out_stride, 8); break;
    }
}
#endif

/* x [m, k] (row stride x_stride), packed [n / 16, k / 2, 16, 2], out [m, n] contiguous; n a multiple
   of 32 and k of 2 (the caller checks). Returns 0, or 1 when this build has no kernel. */
int grokd_linear_bf16(const uint16_t *x, int64_t m, int64_t x_stride, const uint16_t *packed, int64_t n,
                      int64_t k, uint16_t *out, int num_threads) {
#ifdef GROKD_DPBF16
    const int64_t pairs = k / 2, groups = n / (2 * PANEL), panel_elems = pairs * 2 * PANEL;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const uint16_t *w0 = packed + 2 * g * panel_elems, *w1 = w0 + panel_elems;
        for (int64_t r = 0; r < m; r += MAX_ROWS) {
            const int rows = m - r < MAX_ROWS ? (int)(m - r) : MAX_ROWS;
            tile_rows(x + r * x_stride, x_stride, w0, w1, pairs, out + r * n + g * 2 * PANEL, n, rows);
        }
    }
    return 0;
#else
    (void)x, (void)m, (void)x_stride, (void)packed, (void)n, (void)k, (void)out, (void)num_threads;
    return 1;
#endif
}
