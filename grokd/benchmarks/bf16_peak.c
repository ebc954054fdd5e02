/* The bf16 compute ceiling of an AVX512-BF16 CPU: vdpbf16ps with 24 independent float32 sums on two
 * threads (enough chains to hide the instruction's latency), in GFLOP/s; RESULTS.md#cpu-projections
 * sets the prefill projections against it.
 *   gcc -O3 -march=native -fopenmp grokd/benchmarks/bf16_peak.c -o /tmp/bf16_peak && /tmp/bf16_peak */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <omp.h>
int main(void) {
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
        long iters = 20000000;
        float sink = 0;
#pragma omp parallel num_threads(2) reduction(+:sink)
        {
            __m512 acc[24];
            for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps(i);
            __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3f803f81);
            for (long it = 0; it < iters; it++) {
#pragma GCC unroll 24
                for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
                __asm__ volatile("" : "+v"(a));
            }
            for (int i = 0; i < 24; i++) sink += _mm512_reduce_add_ps(acc[i]);
        }
        double dt = omp_get_wtime() - t0;
        double gf = 2.0 * iters * 24 * 64 / dt / 1e9;
        if (gf > best) best = gf;
        if (sink == 1.2345f) printf("x");
    }
    printf("vdpbf16ps peak, 2 threads: %.0f GFLOP/s\n", best);
    return 0;
}
