/* One (query type, pool type) pair's decode attention (see decode_attention.c), included with these
 * defined:
 *   Q_T, KV_T      q's (and out's) element type, the pool's
 *   NAME           the exported function
 *   ROW_WIDTH(d)   elements of KV_T per (token, head) row of a pool of head dim d
 *   KV_SCALED      1 when each row carries a float32 scale (int8 pools), else 0
 *   ROW_SCALE(r,d) row r's scale (the constant 1.0f for unscaled pools, which the compiler drops)
 *   PREFETCH_AHEAD how many blocks ahead the loops ask for
 *   WIDEN_Q1, WIDEN_KV1   one element to float32
 *   WIDEN_Q32, WIDEN_KV32 32 elements to two float32 vectors, both in the kernel's lane order
 *   UNPAIR32       two vectors in that lane order back to 32 floats in order
 *   NARROW_Q1      float32 to Q_T
 *   DPBF16         1 when q and pool are bf16 and the CPU has vdpbf16ps (see decode_attention.c): q.k
 *                  and the bf16-mode weighted sums then multiply bf16 pairs, not widened vectors
 *   I8_DPBF16      1 for a bf16 q over an int8 pool when the CPU has vdpbf16ps: q.k sixteen tokens at a
 *                  time, the keys converted to bf16 (exact) and multiplied with vdpbf16ps
 *   I8_VNNI        1 for a bf16 q over an int8 pool when the CPU has AVX512-VNNI: q quantized to int8
 *                  per head and q.k summed in int32 with vpdpbusd (head dims 64 and 128; before the
 *                  I8_DPBF16 loop, which takes what it leaves)
 */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* q . k for the `group` query heads of kv head h, tokens [t0, t1) (t0 on a block boundary), asking
   for the same tokens' values too when prefetch_values (see the caller); always inlined so that
   the callers below can fix `dim` and the compiler unroll over it */
static inline __attribute__((always_inline)) void CAT(NAME, _scores_dim)(
    const Q_T *q, const KV_T *pool, const int64_t *table, const Shape *s, int64_t b, int64_t h, int64_t t0,
    int64_t t1, float *scores, int64_t stride, int prefetch_values, const int64_t dim) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES, w = ROW_WIDTH(dim);
    const int paired = dim % (2 * LANES) == 0;
#if DPBF16
    __m512bh qb[group * (paired ? dim / 32 : 1)]; /* q in bf16 pairs, those after the first swapped */
    (void)vecs;
#else
    f32x16 qv[group * (paired ? vecs : 1)];
#endif
#if I8_DPBF16
    __m512bh qb8[group * (paired ? dim / 32 : 1)]; /* q as it lies, for vdpbf16ps against K made bf16 */
#endif
#if I8_VNNI
    int32_t q32[group * dim / 4 + 1]; /* q quantized per head as the keys are (quantize_q_i8), four a word */
    int8_t *q8 = (int8_t *)q32;
    float q8_scale[group];
    int32_t q8_sum[group];
#endif
    float qf[group * dim];
    for (int64_t g = 0; g < group; g++) {
        const Q_T *qr = q + b * s->q_row_stride + (h * group + g) * s->q_head_stride;
        for (int64_t d = 0; d < dim; d++) qf[g * dim + d] = WIDEN_Q1(qr[d]);
#if DPBF16
        if (paired)
            for (int64_t v = 0; v < dim / 32; v++) {
                const __m512bh x = load_bf16x32(qr + 32 * v);
                qb[g * (dim / 32) + v] = v ? swap_bf16_pairs(x) : x;
            }
#else
        if (paired)
            for (int64_t v = 0; v < vecs; v += 2) WIDEN_Q32(qr + v * LANES, &qv[g * vecs + v], &qv[g * vecs + v + 1]);
#endif
#if I8_DPBF16
        if (paired)
            for (int64_t v = 0; v < dim / 32; v++) qb8[g * (dim / 32) + v] = load_bf16x32(qr + 32 * v);
#endif
    }
#if I8_VNNI
    int vnni = dim % 64 == 0 && dim <= 128 && group <= 16;
    for (int64_t g = 0; vnni && g < group; g++)
        vnni = quantize_q_i8(qf + g * dim, dim, q8 + g * dim, &q8_scale[g], &q8_sum[g]);
#endif
    const BlockStream keys = {(const char *)pool, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                              PREFETCH_AHEAD};
    prefetch_first_blocks(&keys, t0, t1);
    for (int64_t t = t0; t < t1;) {
        const KV_T *k = stream_block(&keys, t, t1, 1);
        const int64_t n = t1 - t < bs ? t1 - t : bs;
        if (prefetch_values)
            prefetch_block(pool + ((s->num_blocks + table[t / bs]) * s->kv_heads + h) * bs * w, bs * w * sizeof(KV_T));
        int64_t r = 0;
#if DPBF16
        if (paired) /* sixteen tokens at a time, their sums sharing the shuffles (sum16x16) */
            for (; r + 16 <= n; r += 16, t += 16, k += 16 * w)
                for (int64_t g = 0; g < group; g++) {
                    const __m512bh *qg = qb + g * (dim / 32);
                    f32x16 a[16];
                    for (int j = 0; j < 16; j++) a[j] = dot_dpbf16(qg, k + j * w, dim);
                    const f32x16 dots = sum16x16(a);
                    memcpy(scores + g * stride + (t - t0), &dots, sizeof dots);
                }
#endif
#if I8_VNNI
        if (vnni) /* bf16 q, int8 pool, q quantized: sixteen tokens at a time, their key rows transposed
                     so that each lane holds one token (transpose16_epi32) and vpdpbusd adds four
                     products of int8 a lane against q's matching four bytes, broadcast: the sixteen
                     scores come out in one vector, with no reductions. vpdpbusd multiplies unsigned
                     bytes by signed ones, so the keys are biased to unsigned (k + 128, one xor) and
                     128 * sum(q) taken off the exact integer sums: score = scale_q scale_k sum q8 k8. */
            for (; r + 16 <= n; r += 16, t += 16, k += 16 * w) {
                const __m512i bias = _mm512_set1_epi8((char)0x80);
                __m512i acc[16][2];
                float sc[16];
                for (int j = 0; j < 16; j++) sc[j] = ROW_SCALE(k + j * w, dim);
                for (int64_t half = 0; half < dim / 64; half++) {
                    __m512i rows[16], cols[16];
                    for (int j = 0; j < 16; j++)
                        rows[j] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(k + j * w + 64 * half)), bias);
                    transpose16_epi32(rows, cols);
                    for (int64_t g = 0; g < group; g++) {
                        const int32_t *qg = q32 + g * (dim / 4) + 16 * half;
                        __m512i e = half ? acc[g][0] : _mm512_setzero_si512(), o = half ? acc[g][1] : _mm512_setzero_si512();
                        for (int i = 0; i < 16; i += 2) { /* two chains, half as deep */
                            e = _mm512_dpbusd_epi32(e, cols[i], _mm512_set1_epi32(qg[i]));
                            o = _mm512_dpbusd_epi32(o, cols[i + 1], _mm512_set1_epi32(qg[i + 1]));
                        }
                        acc[g][0] = e, acc[g][1] = o;
                    }
                }
                const __m512 row_scales = _mm512_loadu_ps(sc);
                for (int64_t g = 0; g < group; g++) {
                    const __m512i dots = _mm512_sub_epi32(_mm512_add_epi32(acc[g][0], acc[g][1]),
                                                          _mm512_set1_epi32(128 * q8_sum[g]));
                    _mm512_storeu_ps(scores + g * stride + (t - t0),
                                     _mm512_mul_ps(_mm512_cvtepi32_ps(dots),
                                                   _mm512_mul_ps(row_scales, _mm512_set1_ps(q8_scale[g]))));
                }
            }
#endif
#if I8_DPBF16
        if (paired && dim <= 128 && group <= 16) /* bf16 q, int8 pool: sixteen tokens at a time, each key
                       row converted to bf16 once for all the group's heads and multiplied with
                       vdpbf16ps, the sixteen sums sharing the shuffles (sum16x16) and multiplied by
                       the keys' scales as one vector. Hot, 2 threads, SmolLM2 shape: 0.94x the time
                       of the widened four-token loop (1 x 2,048), 0.95x (16 x 200); the same loop
                       with widened float32 FMAs instead was no faster (1.01-1.02x). */
            for (; r + 16 <= n; r += 16, t += 16, k += 16 * w) {
                f32x16 a[16][16], row_scales; /* fixed sizes: variable-length arrays went through the stack */
                float sc[16];
                for (int j = 0; j < 16; j++) {
                    const KV_T *kj = k + j * w;
                    sc[j] = ROW_SCALE(kj, dim);
                    __m512bh kb[4];
                    for (int64_t v = 0; v < dim / 32; v++) kb[v] = i8x32_to_bf16(kj + 32 * v);
                    for (int64_t g = 0; g < group; g++) {
                        const __m512bh *qg = qb8 + g * (dim / 32);
                        __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), qg[0], kb[0]);
                        for (int64_t v = 1; v < dim / 32; v++) acc = _mm512_dpbf16_ps(acc, qg[v], kb[v]);
                        a[g][j] = (f32x16)acc;
                    }
                }
                memcpy(&row_scales, sc, sizeof row_scales);
                for (int64_t g = 0; g < group; g++) {
                    const f32x16 dots = sum16x16(a[g]) * row_scales;
                    memcpy(scores + g * stride + (t - t0), &dots, sizeof dots);
                }
            }
#endif
        if (paired) /* four tokens at a time, so that their sums share the shuffles (sum16x4) */
            for (; r + 4 <= n; r += 4, t += 4, k += 4 * w) {
#if DPBF16
                for (int64_t g = 0; g < group; g++) {
                    const __m512bh *qg = qb + g * (dim / 32);
                    const f32x4 dots = sum16x4(dot_dpbf16(qg, k, dim), dot_dpbf16(qg, k + w, dim),
                                               dot_dpbf16(qg, k + 2 * w, dim), dot_dpbf16(qg, k + 3 * w, dim));
                    memcpy(scores + g * stride + (t - t0), &dots, sizeof dots);
                }
#else
                f32x16 kv[4][vecs];
                for (int j = 0; j < 4; j++)
                    for (int64_t v = 0; v < vecs; v += 2) WIDEN_KV32(k + j * w + v * LANES, &kv[j][v], &kv[j][v + 1]);
                f32x4 row_scales = {1.0f, 1.0f, 1.0f, 1.0f};
                if (KV_SCALED)
                    row_scales = (f32x4){ROW_SCALE(k, dim), ROW_SCALE(k + w, dim), ROW_SCALE(k + 2 * w, dim),
                                         ROW_SCALE(k + 3 * w, dim)};
                for (int64_t g = 0; g < group; g++) {
                    const f32x16 *qg = qv + g * vecs;
                    f32x16 a0 = qg[0] * kv[0][0], a1 = qg[0] * kv[1][0], a2 = qg[0] * kv[2][0], a3 = qg[0] * kv[3][0];
                    for (int64_t v = 1; v < vecs; v++) {
                        a0 += qg[v] * kv[0][v];
                        a1 += qg[v] * kv[1][v];
                        a2 += qg[v] * kv[2][v];
                        a3 += qg[v] * kv[3][v];
                    }
                    f32x4 dots = sum16x4(a0, a1, a2, a3);
                    if (KV_SCALED) dots *= row_scales;
                    memcpy(scores + g * stride + (t - t0), &dots, sizeof dots);
                }
#endif
            }
        for (; r < n; r++, t++, k += w) {
            float *out = scores + (t - t0);
            const float row_scale = ROW_SCALE(k, dim);
            if (paired) {
#if DPBF16
                for (int64_t g = 0; g < group; g++) out[g * stride] = sum16(dot_dpbf16(qb + g * (dim / 32), k, dim));
#else
                f32x16 kv[vecs];
                for (int64_t v = 0; v < vecs; v += 2) WIDEN_KV32(k + v * LANES, &kv[v], &kv[v + 1]);
                for (int64_t g = 0; g < group; g++) {
                    f32x16 acc = qv[g * vecs] * kv[0];
                    for (int64_t v = 1; v < vecs; v++) acc += qv[g * vecs + v] * kv[v];
                    out[g * stride] = sum16(acc) * row_scale;
                }
#endif
            } else {
                for (int64_t g = 0; g < group; g++) {
                    float dot = 0.0f;
                    for (int64_t d = 0; d < dim; d++) dot += qf[g * dim + d] * WIDEN_KV1(k[d]);
                    out[g * stride] = dot * row_scale;
                }
            }
        }
    }
}

static void CAT(NAME, _scores)(const Q_T *q, const KV_T *pool, const int64_t *table, const Shape *s, int64_t b,
                               int64_t h, int64_t t0, int64_t t1, float *scores, int64_t stride, int prefetch_values) {
    if (s->head_dim == 64)
        CAT(NAME, _scores_dim)(q, pool, table, s, b, h, t0, t1, scores, stride, prefetch_values, 64);
    else if (s->head_dim == 128)
        CAT(NAME, _scores_dim)(q, pool, table, s, b, h, t0, t1, scores, stride, prefetch_values, 128);
    else
        CAT(NAME, _scores_dim)(q, pool, table, s, b, h, t0, t1, scores, stride, prefetch_values, s->head_dim);
}

/* acc[group, dim] = sum over tokens [t0, t1) of probs . v, for kv head h, when dim is a multiple
   of 32 and at most 128: passes of `hp` query heads (a compile-time constant, at most 4), so that
   each v load serves all of them while their hp * dim / 16 accumulators stay in registers; a last
   pass short of heads repeats a head's probabilities and drops its sums. A scaled row's scale
   multiplies the probabilities, once per token. Always inlined, so that the callers below fix
   `dim` and `hp`. */
static inline __attribute__((always_inline)) void CAT(NAME, _values_vec)(
    const KV_T *values, const int64_t *table, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, int64_t stride, float *acc, const int64_t dim, const int hp) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES, w = ROW_WIDTH(dim);
    const BlockStream stream = {(const char *)values, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                                PREFETCH_AHEAD};
    for (int64_t g = 0; g < group; g += hp) {
        const float *p[4];
        for (int j = 0; j < hp; j++) p[j] = probs + (g + j < group ? g + j : g) * stride;
        f32x16 sum[4][8] = {{{0}}};
        if (g == 0)
            prefetch_first_blocks(&stream, t0, t1);
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = stream_block(&stream, t, t1, g == 0);
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float row_scale = ROW_SCALE(v, dim);
                float pv[4];
                for (int j = 0; j < hp; j++) pv[j] = p[j][t - t0] * row_scale;
                for (int64_t c = 0; c < vecs; c += 2) {
                    f32x16 x0, x1;
                    WIDEN_KV32(v + c * LANES, &x0, &x1);
                    for (int j = 0; j < hp; j++) {
                        sum[j][c] += pv[j] * x0;
                        sum[j][c + 1] += pv[j] * x1;
                    }
                }
            }
        }
        for (int j = 0; j < hp; j++)
            if (g + j < group)
                for (int64_t c = 0; c < vecs; c += 2) UNPAIR32(acc + (g + j) * dim + c * LANES, sum[j][c], sum[j][c + 1]);
    }
}

#if DPBF16
/* _values_vec's sums with vdpbf16ps, two tokens per instruction (dpbf16_two_tokens), for bf16 mode,
   whose probabilities are bf16 already, and an even block size, so that a chunk's blocks start on
   even token offsets and no pair straddles two blocks; a block's odd last token pairs with a zero
   row and a zero probability */
static inline __attribute__((always_inline)) void CAT(NAME, _values_dpbf16)(
    const KV_T *values, const int64_t *table, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, int64_t stride, float *acc, const int64_t dim, const int hp) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = dim, pairs = (t1 - t0 + 1) / 2;
    const BlockStream stream = {(const char *)values, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                                PREFETCH_AHEAD};
    uint32_t pp[hp][pairs];
    for (int64_t g = 0; g < group; g += hp) {
        for (int j = 0; j < hp; j++)
            bf16_prob_pairs(probs + (g + j < group ? g + j : g) * stride, t1 - t0, pp[j]);
        __m512 sum[4][8];
        for (int j = 0; j < hp; j++)
            for (int64_t c = 0; c < dim / LANES; c++) sum[j][c] = _mm512_setzero_ps();
        if (g == 0)
            prefetch_first_blocks(&stream, t0, t1);
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = stream_block(&stream, t, t1, g == 0);
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            const uint32_t *pk[4]; /* the pairs of tokens t, t + 1 */
            for (int j = 0; j < hp; j++) pk[j] = pp[j] + (t - t0) / 2;
            int64_t r = 0;
            for (; r + 2 <= n; r += 2, v += 2 * w)
                for (int64_t c = 0; c < dim / 32; c++)
                    dpbf16_two_tokens(sum, 2 * c, v + 32 * c, _mm512_loadu_si512((const void *)(v + w + 32 * c)), pk,
                                      r / 2, hp);
            if (r < n) /* an odd last token */
                for (int64_t c = 0; c < dim / 32; c++)
                    dpbf16_two_tokens(sum, 2 * c, v + 32 * c, _mm512_setzero_si512(), pk, r / 2, hp);
            t += n;
        }
        for (int j = 0; j < hp; j++)
            if (g + j < group)
                for (int64_t c = 0; c < dim / 32; c++) unpair32_dpbf16(acc + (g + j) * dim + 32 * c, sum[j][2 * c], sum[j][2 * c + 1]);
    }
}
#endif

#if I8_VNNI
/* _values_vec's sums for an int8 pool in bf16 mode, in int32 on vpdpwssd, two tokens per instruction.
   Each query head's weights p_t * scale_v(t) are quantized to int16 with one scale per item and head
   (max / 32767: finer than the bf16 probabilities they come from, and exact integer sums after);
   the values widen to int16 and interleave by token pairs, as in dpbf16_two_tokens. The int32 sums
   stay in range: at most 256 tokens of 32767 * 127. Returns 0 when it cannot take the item (an odd
   block size, a longer item, or weights that are not finite), which the caller then computes on the
   float32 path. */
static inline __attribute__((always_inline)) int CAT(NAME, _values_vnni)(
    const KV_T *values, const int64_t *table, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, int64_t stride, float *acc, const int64_t dim, const int hp) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = ROW_WIDTH(dim), n = t1 - t0;
    if (bs % 2 || n > 256) return 0;
    const BlockStream stream = {(const char *)values, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                                PREFETCH_AHEAD};
    prefetch_first_blocks(&stream, t0, t1);
    float vscale[256 + LANES]; /* the values' scales, in token order (read masked: past n is never set) */
    for (int64_t t = t0; t < t1;) {
        const KV_T *v = stream_block(&stream, t, t1, 0);
        const int64_t m = t1 - t < bs ? t1 - t : bs;
        for (int64_t r = 0; r < m; r++, t++, v += w) vscale[t - t0] = ROW_SCALE(v, dim);
    }
    int16_t pq[4][256 + 2 * LANES] __attribute__((aligned(64))); /* pass's weights; dword k is the pair 2k, 2k + 1 */
    float wscale[4];
    for (int64_t g = 0; g < group; g += hp) {
        for (int j = 0; j < hp; j++) {
            const float *p = probs + (g + j < group ? g + j : g) * stride;
            __m512 top = _mm512_setzero_ps();
            __mmask16 nan = 0;
            for (int64_t i = 0; i < n; i += LANES) {
                const __mmask16 live = n - i >= LANES ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
                const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + i), _mm512_maskz_loadu_ps(live, vscale + i));
                nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
                top = _mm512_max_ps(top, x);
            }
            const float most = _mm512_reduce_max_ps(top);
            if (nan || !(most <= FLT_MAX)) return 0;
            wscale[j] = most / 32767.0f;
            const __m512 inv = _mm512_set1_ps(most > 0.0f ? 32767.0f / most : 0.0f);
            for (int64_t i = 0; i < n + 1; i += LANES) { /* one past n: an odd count's pair ends in a zero */
                const __mmask16 live = n - i >= LANES ? 0xFFFF : n > i ? (__mmask16)((1u << (n - i)) - 1) : 0;
                const __m512 x = _mm512_mul_ps(
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + i), _mm512_maskz_loadu_ps(live, vscale + i)), inv);
                _mm256_store_si256((__m256i *)(pq[j] + i), _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(x)));
            }
        }
        __m512i sum[4][8];
        for (int j = 0; j < hp; j++)
            for (int64_t c = 0; c < dim / LANES; c++) sum[j][c] = _mm512_setzero_si512();
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = stream_block(&stream, t, t1, g == 0);
            const int64_t m = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < m; r += 2, v += 2 * w) {
                const int64_t k = (t + r - t0) / 2;
                __m512i pj[4];
                for (int j = 0; j < hp; j++) {
                    int32_t pair;
                    memcpy(&pair, pq[j] + 2 * k, sizeof pair);
                    pj[j] = _mm512_set1_epi32(pair);
                }
                for (int64_t c = 0; c < dim / 32; c++) {
                    const __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(v + 32 * c)));
                    const __m512i y = r + 1 < m ? _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(v + w + 32 * c)))
                                                : _mm512_setzero_si512();
                    const __m512i lo = _mm512_unpacklo_epi16(x, y), hi = _mm512_unpackhi_epi16(x, y);
                    for (int j = 0; j < hp; j++) {
                        sum[j][2 * c] = _mm512_dpwssd_epi32(sum[j][2 * c], lo, pj[j]);
                        sum[j][2 * c + 1] = _mm512_dpwssd_epi32(sum[j][2 * c + 1], hi, pj[j]);
                    }
                }
            }
            t += m;
        }
        for (int j = 0; j < hp; j++)
            if (g + j < group) {
                const __m512 scale = _mm512_set1_ps(wscale[j]);
                for (int64_t c = 0; c < dim / 32; c++)
                    unpair32_dpbf16(acc + (g + j) * dim + 32 * c, _mm512_mul_ps(_mm512_cvtepi32_ps(sum[j][2 * c]), scale),
                                    _mm512_mul_ps(_mm512_cvtepi32_ps(sum[j][2 * c + 1]), scale));
            }
    }
    return 1;
}
#endif

/* the same for any dim: two query heads per pass, scalar loops */
static void CAT(NAME, _values_any)(const KV_T *values, const int64_t *table, const Shape *s, int64_t h, int64_t t0,
                                   int64_t t1, const float *probs, int64_t stride, float *acc) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, dim = s->head_dim, w = ROW_WIDTH(dim);
    for (int64_t g = 0; g < group; g += 2) {
        const int two = g + 1 < group;
        const float *p0 = probs + g * stride, *p1 = two ? p0 + stride : p0;
        float *a0 = acc + g * dim, *a1 = a0 + dim;
        for (int64_t d = 0; d < dim; d++) a0[d] = 0.0f;
        if (two)
            for (int64_t d = 0; d < dim; d++) a1[d] = 0.0f;
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = values + (table[t / bs] * s->kv_heads + h) * bs * w;
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float row_scale = ROW_SCALE(v, dim), pv0 = p0[t - t0] * row_scale, pv1 = p1[t - t0] * row_scale;
                for (int64_t d = 0; d < dim; d++) {
                    a0[d] += pv0 * WIDEN_KV1(v[d]);
                    if (two) a1[d] += pv1 * WIDEN_KV1(v[d]);
                }
            }
        }
    }
}

/* heads per pass, within the 16 accumulators a pass may keep (dim 64: 4 vectors a head; dim 128: 8):
   at dim 64, 4 or 3 when that divides the group (SmolLM2's 3 heads in one pass, where two passes of
   two widened every value twice: 2,048 tokens took 88 instead of 83 us on one thread, warm, bf16,
   and 97 instead of 84 for int8), else 2 (1 for a group of one) */
static void CAT(NAME, _values)(const KV_T *pool, const int64_t *table, const Shape *s, int64_t h, int64_t t0,
                               int64_t t1, const float *probs, int64_t stride, float *acc) {
    const int64_t group = s->q_heads / s->kv_heads, dim = s->head_dim;
    const KV_T *values = pool + s->num_blocks * s->kv_heads * s->block_size * ROW_WIDTH(dim);
#if I8_VNNI
    if (s->bf16 && dim == 64 && group % 3 == 0 && CAT(NAME, _values_vnni)(values, table, s, h, t0, t1, probs, stride, acc, 64, 3))
        return;
    if (s->bf16 && dim == 64 && group % 4 == 0 && CAT(NAME, _values_vnni)(values, table, s, h, t0, t1, probs, stride, acc, 64, 4))
        return;
    if (s->bf16 && dim == 64 && group % 2 == 0 && CAT(NAME, _values_vnni)(values, table, s, h, t0, t1, probs, stride, acc, 64, 2))
        return;
    if (s->bf16 && dim == 128 && group % 2 == 0 && CAT(NAME, _values_vnni)(values, table, s, h, t0, t1, probs, stride, acc, 128, 2))
        return;
#endif
#if DPBF16
    if (s->bf16 && s->block_size % 2 == 0 && dim % 32 == 0 && dim <= 128) {
        if (dim == 64 && group % 4 == 0)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 64, 4);
        else if (dim == 64 && group % 3 == 0)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 64, 3);
        else if (dim == 64 && group > 1)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 64, 2);
        else if (dim == 64)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 64, 1);
        else if (dim == 128 && group > 1)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 128, 2);
        else if (dim == 128)
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, 128, 1);
        else
            CAT(NAME, _values_dpbf16)(values, table, s, h, t0, t1, probs, stride, acc, dim, 2);
        return;
    }
#endif
    if (dim == 64 && group % 4 == 0)
        CAT(NAME, _values_vec)(values, table, s, h, t0, t1, probs, stride, acc, 64, 4);
    else if (dim == 64 && group % 3 == 0)
        CAT(NAME, _values_vec)(values, table, s, h, t0, t1, probs, stride, acc, 64, 3);
    else if (dim == 64)
        CAT(NAME, _values_vec)(values, table, s, h, t0, t1, probs, stride, acc, 64, group == 1 ? 1 : 2);
    else if (dim == 128)
        CAT(NAME, _values_vec)(values, table, s, h, t0, t1, probs, stride, acc, 128, group == 1 ? 1 : 2);
    else if (dim % (2 * LANES) == 0 && dim <= 8 * LANES)
        CAT(NAME, _values_vec)(values, table, s, h, t0, t1, probs, stride, acc, dim, 2);
    else
        CAT(NAME, _values_any)(values, table, s, h, t0, t1, probs, stride, acc);
}

#if I8_VNNI
/* One item in one pass, flash-decoding style: its scores (which ask for its values too), their
   softmax against the item's own maximum, and the weighted sum of its values while those are still
   in cache. part = [group * dim sums, group maxima, group totals], merged across the row's chunks
   by the caller. Where the values of the whole call do not fit in cache, the four phases below
   would read them from memory twice; and on a real step (the weights have flushed the caches) the
   phases' barriers left DRAM idle during the softmax. */
static void CAT(NAME, _item)(const Q_T *q, const KV_T *pool, const int64_t *table, const Shape *s, int64_t b,
                             int64_t h, int64_t t0, int64_t t1, float *part) {
    const int64_t group = s->q_heads / s->kv_heads, dim = s->head_dim, n = t1 - t0;
    float x[16 * 256]; /* group <= 16 heads' scores of at most 256 tokens (one_pass's conditions) */
    CAT(NAME, _scores)(q, pool, table, s, b, h, t0, t1, x, n, 1);
    float *top = part + group * dim, *total = top + group;
    for (int64_t g = 0; g < group; g++) {
        top[g] = scale_scores(x + g * n, n, s);
        total[g] = exp_scores(x + g * n, n, top[g]);
    }
    CAT(NAME, _values)(pool, table, s, h, t0, t1, x, n, part);
}
#endif

/* Returns 0, or 1 when scratch memory could not be allocated (nothing was written). */
int NAME(const Q_T *q, const KV_T *pool, const int64_t *tables, const int64_t *seq_lens, Shape s, Q_T *out,
         int num_threads) {
    const int64_t group = s.q_heads / s.kv_heads, dim = s.head_dim;
    const int64_t chunk = CHUNK_TOKENS > s.block_size ? CHUNK_TOKENS / s.block_size * s.block_size : s.block_size;
#if I8_VNNI /* bf16 mode over an int8 pool: each item in one pass (_item), then a merge */
    const int one_pass = s.bf16 && (dim == 64 || dim == 128) && group <= 16 && s.block_size % 2 == 0 && chunk <= 256;
#else
    const int one_pass = 0;
#endif
    const int64_t part = group * dim + (one_pass ? 2 * group : 0); /* floats of one item's partial result */
    int64_t *item_start = malloc(sizeof(int64_t) * (s.rows + 1));
    int64_t *score_start = malloc(sizeof(int64_t) * (s.rows + 1));
    float *scores = NULL, *partial = NULL;
    if (item_start && score_start) {
        item_start[0] = score_start[0] = 0;
        for (int64_t b = 0; b < s.rows; b++) {
            const int64_t len = seq_lens[b * s.len_stride];
            item_start[b + 1] = item_start[b] + s.kv_heads * chunks_of(len, chunk);
            score_start[b + 1] = score_start[b] + s.q_heads * len;
        }
        scores = malloc(sizeof(float) * (one_pass ? 1 : score_start[s.rows] + 1));
        partial = malloc(sizeof(float) * (item_start[s.rows] + 1) * part);
    }
    if (!item_start || !score_start || !scores || !partial) {
        free(item_start), free(score_start), free(scores), free(partial);
        return 1;
    }
    const int64_t items = item_start[s.rows];
    const int64_t value_bytes = score_start[s.rows] / s.q_heads * s.kv_heads * ROW_WIDTH(dim) * (int64_t)sizeof(KV_T);
    const int prefetch_values = value_bytes <= PREFETCH_VALUES_BYTES;
#pragma omp parallel num_threads(num_threads)
    {
        int64_t b = 0; /* items of a thread's static share are in row order */
#if I8_VNNI
        if (one_pass) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < items; i++) {
                while (item_start[b + 1] <= i) b++;
                /* chunk-major within a row: a thread's consecutive items read one block's kv heads in
                   turn, which lie together in the pool */
                const int64_t len = seq_lens[b * s.len_stride];
                const int64_t h = (i - item_start[b]) % s.kv_heads, c = (i - item_start[b]) / s.kv_heads;
                const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
                CAT(NAME, _item)(q, pool, tables + b * s.table_stride, &s, b, h, c * chunk, t1, partial + i * part);
            }
#pragma omp for schedule(static)
            for (int64_t bh = 0; bh < s.rows * s.kv_heads; bh++) { /* merge the chunks, in order */
                const int64_t row = bh / s.kv_heads, h = bh % s.kv_heads;
                const int64_t per = chunks_of(seq_lens[row * s.len_stride], chunk);
                const float *first = partial + (item_start[row] + h) * part; /* chunk c's: c * kv_heads further */
                const int64_t step = s.kv_heads * part;
                Q_T *o = out + (row * s.q_heads + h * group) * dim;
                for (int64_t g = 0; g < group; g++) {
                    float top = -INFINITY, total = 0.0f, weight[per];
                    for (int64_t c = 0; c < per; c++) {
                        const float m = first[c * step + group * dim + g];
                        top = m > top ? m : top;
                    }
                    for (int64_t c = 0; c < per; c++) {
                        weight[c] = expf(first[c * step + group * dim + g] - top);
                        total += weight[c] * first[c * step + group * dim + group + g];
                    }
                    for (int64_t c = 0; c < per; c++) weight[c] /= total;
                    for (int64_t d = 0; d < dim; d++) {
                        float sum = 0.0f;
                        for (int64_t c = 0; c < per; c++) sum += weight[c] * first[c * step + g * dim + d];
                        o[g * dim + d] = NARROW_Q1(sum);
                    }
                }
            }
        } else
#endif
        {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < items; i++) { /* 1: the scores of one item */
                while (item_start[b + 1] <= i) b++;
                const int64_t len = seq_lens[b * s.len_stride], per = chunks_of(len, chunk);
                const int64_t h = (i - item_start[b]) / per, c = (i - item_start[b]) % per;
                const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
                CAT(NAME, _scores)(q, pool, tables + b * s.table_stride, &s, b, h, c * chunk, t1,
                                   scores + score_start[b] + h * group * len + c * chunk, len, prefetch_values);
            }
#pragma omp for schedule(static)
            for (int64_t rh = 0; rh < s.rows * s.q_heads; rh++) { /* 2: one (row, query head)'s softmax */
                const int64_t row = rh / s.q_heads, len = seq_lens[row * s.len_stride];
                softmax_row(scores + score_start[row] + (rh % s.q_heads) * len, len, &s);
            }
            b = 0;
#pragma omp for schedule(static)
            for (int64_t i = 0; i < items; i++) { /* 3: one item's partial weighted sum */
                while (item_start[b + 1] <= i) b++;
                const int64_t len = seq_lens[b * s.len_stride], per = chunks_of(len, chunk);
                const int64_t h = (i - item_start[b]) / per, c = (i - item_start[b]) % per;
                const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
                CAT(NAME, _values)(pool, tables + b * s.table_stride, &s, h, c * chunk, t1,
                                   scores + score_start[b] + h * group * len + c * chunk, len, partial + i * part);
            }
#pragma omp for schedule(static)
            for (int64_t bh = 0; bh < s.rows * s.kv_heads; bh++) { /* 4: add the chunks, in order */
                const int64_t row = bh / s.kv_heads, h = bh % s.kv_heads;
                const int64_t per = chunks_of(seq_lens[row * s.len_stride], chunk);
                const float *first = partial + (item_start[row] + h * per) * part;
                Q_T *o = out + (row * s.q_heads + h * group) * dim;
                for (int64_t e = 0; e < group * dim; e++) {
                    float sum = first[e];
                    for (int64_t c = 1; c < per; c++) sum += first[c * part + e];
                    o[e] = NARROW_Q1(sum);
                }
            }
        }
    }
    free(item_start), free(score_start), free(scores), free(partial);
    return 0;
}

#undef CAT
#undef CAT2
/* this instantiation's parameters: the next one defines its own */
#undef Q_T
#undef KV_T
#undef NAME
#undef DPBF16
#undef I8_DPBF16
#undef I8_VNNI
#undef ROW_WIDTH
#undef KV_SCALED
#undef ROW_SCALE
#undef PREFETCH_AHEAD
#undef WIDEN_Q1
#undef WIDEN_KV1
#undef WIDEN_Q32
#undef WIDEN_KV32
#undef UNPAIR32
#undef NARROW_Q1
