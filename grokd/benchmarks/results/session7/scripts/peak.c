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
