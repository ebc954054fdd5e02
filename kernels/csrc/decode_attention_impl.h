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
 */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* q . k for the `group` query heads of kv head h, tokens [t0, t1) (t0 on a block boundary), asking
   for the same tokens' values too when prefetch_values (see the caller); always inlined so that
   the callers below can fix `dim` and the compiler unroll over it */
static inline __attribute__((always_inline)) void CAT(NAME, _scores_dim)(
    const Q_T *q, const KV_T *pool, const int64_t *table, int64_t len, const Shape *s, int64_t b, int64_t h,
    int64_t t0, int64_t t1, float *scores, int prefetch_values, const int64_t dim) {
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
                    memcpy(scores + (h * group + g) * len + t, &dots, sizeof dots);
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
                    memcpy(scores + (h * group + g) * len + t, &dots, sizeof dots);
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
                    memcpy(scores + (h * group + g) * len + t, &dots, sizeof dots);
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
                    memcpy(scores + (h * group + g) * len + t, &dots, sizeof dots);
                }
#endif
            }
        for (; r < n; r++, t++, k += w) {
            float *out = scores + h * group * len + t;
            const float row_scale = ROW_SCALE(k, dim);
            if (paired) {
#if DPBF16
                for (int64_t g = 0; g < group; g++) out[g * len] = sum16(dot_dpbf16(qb + g * (dim / 32), k, dim));
#else
                f32x16 kv[vecs];
                for (int64_t v = 0; v < vecs; v += 2) WIDEN_KV32(k + v * LANES, &kv[v], &kv[v + 1]);
                for (int64_t g = 0; g < group; g++) {
                    f32x16 acc = qv[g * vecs] * kv[0];
                    for (int64_t v = 1; v < vecs; v++) acc += qv[g * vecs + v] * kv[v];
                    out[g * len] = sum16(acc) * row_scale;
                }
#endif
            } else {
                for (int64_t g = 0; g < group; g++) {
                    float dot = 0.0f;
                    for (int64_t d = 0; d < dim; d++) dot += qf[g * dim + d] * WIDEN_KV1(k[d]);
                    out[g * len] = dot * row_scale;
                }
            }
        }
    }
}

static void CAT(NAME, _scores)(const Q_T *q, const KV_T *pool, const int64_t *table, int64_t len, const Shape *s,
                               int64_t b, int64_t h, int64_t t0, int64_t t1, float *scores, int prefetch_values) {
    if (s->head_dim == 64)
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, prefetch_values, 64);
    else if (s->head_dim == 128)
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, prefetch_values, 128);
    else
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, prefetch_values, s->head_dim);
}

/* acc[group, dim] = sum over tokens [t0, t1) of probs . v, for kv head h, when dim is a multiple
   of 32 and at most 128: passes of `hp` query heads (a compile-time constant, at most 4), so that
   each v load serves all of them while their hp * dim / 16 accumulators stay in registers; a last
   pass short of heads repeats a head's probabilities and drops its sums. A scaled row's scale
   multiplies the probabilities, once per token. Always inlined, so that the callers below fix
   `dim` and `hp`. */
static inline __attribute__((always_inline)) void CAT(NAME, _values_vec)(
    const KV_T *values, const int64_t *table, int64_t len, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, float *acc, const int64_t dim, const int hp) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES, w = ROW_WIDTH(dim);
    const BlockStream stream = {(const char *)values, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                                PREFETCH_AHEAD};
    for (int64_t g = 0; g < group; g += hp) {
        const float *p[4];
        for (int j = 0; j < hp; j++) p[j] = probs + (h * group + (g + j < group ? g + j : g)) * len;
        f32x16 sum[4][8] = {{{0}}};
        if (g == 0)
            prefetch_first_blocks(&stream, t0, t1);
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = stream_block(&stream, t, t1, g == 0);
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float row_scale = ROW_SCALE(v, dim);
                float pv[4];
                for (int j = 0; j < hp; j++) pv[j] = p[j][t] * row_scale;
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
    const KV_T *values, const int64_t *table, int64_t len, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, float *acc, const int64_t dim, const int hp) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = dim, pairs = (t1 - t0 + 1) / 2;
    const BlockStream stream = {(const char *)values, table, bs, s->kv_heads, h, bs * w * (int64_t)sizeof(KV_T),
                                PREFETCH_AHEAD};
    uint32_t pp[hp][pairs];
    for (int64_t g = 0; g < group; g += hp) {
        for (int j = 0; j < hp; j++)
            bf16_prob_pairs(probs + (h * group + (g + j < group ? g + j : g)) * len + t0, t1 - t0, pp[j]);
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

/* the same for any dim: two query heads per pass, scalar loops */
static void CAT(NAME, _values_any)(const KV_T *values, const int64_t *table, int64_t len, const Shape *s, int64_t h,
                                   int64_t t0, int64_t t1, const float *probs, float *acc) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, dim = s->head_dim, w = ROW_WIDTH(dim);
    for (int64_t g = 0; g < group; g += 2) {
        const int two = g + 1 < group;
        const float *p0 = probs + (h * group + g) * len, *p1 = two ? p0 + len : p0;
        float *a0 = acc + g * dim, *a1 = a0 + dim;
        for (int64_t d = 0; d < dim; d++) a0[d] = 0.0f;
        if (two)
            for (int64_t d = 0; d < dim; d++) a1[d] = 0.0f;
        for (int64_t t = t0; t < t1;) {
            const KV_T *v = values + (table[t / bs] * s->kv_heads + h) * bs * w;
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float row_scale = ROW_SCALE(v, dim), pv0 = p0[t] * row_scale, pv1 = p1[t] * row_scale;
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
static void CAT(NAME, _values)(const KV_T *pool, const int64_t *table, int64_t len, const Shape *s, int64_t h,
                               int64_t t0, int64_t t1, const float *probs, float *acc) {
    const int64_t group = s->q_heads / s->kv_heads, dim = s->head_dim;
    const KV_T *values = pool + s->num_blocks * s->kv_heads * s->block_size * ROW_WIDTH(dim);
#if DPBF16
    if (s->bf16 && s->block_size % 2 == 0 && dim % 32 == 0 && dim <= 128) {
        if (dim == 64 && group % 4 == 0)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 64, 4);
        else if (dim == 64 && group % 3 == 0)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 64, 3);
        else if (dim == 64 && group > 1)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 64, 2);
        else if (dim == 64)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 64, 1);
        else if (dim == 128 && group > 1)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 128, 2);
        else if (dim == 128)
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, 128, 1);
        else
            CAT(NAME, _values_dpbf16)(values, table, len, s, h, t0, t1, probs, acc, dim, 2);
        return;
    }
#endif
    if (dim == 64 && group % 4 == 0)
        CAT(NAME, _values_vec)(values, table, len, s, h, t0, t1, probs, acc, 64, 4);
    else if (dim == 64 && group % 3 == 0)
        CAT(NAME, _values_vec)(values, table, len, s, h, t0, t1, probs, acc, 64, 3);
    else if (dim == 64)
        CAT(NAME, _values_vec)(values, table, len, s, h, t0, t1, probs, acc, 64, group == 1 ? 1 : 2);
    else if (dim == 128)
        CAT(NAME, _values_vec)(values, table, len, s, h, t0, t1, probs, acc, 128, group == 1 ? 1 : 2);
    else if (dim % (2 * LANES) == 0 && dim <= 8 * LANES)
        CAT(NAME, _values_vec)(values, table, len, s, h, t0, t1, probs, acc, dim, 2);
    else
        CAT(NAME, _values_any)(values, table, len, s, h, t0, t1, probs, acc);
}

/* Returns 0, or 1 when scratch memory could not be allocated (nothing was written). */
int NAME(const Q_T *q, const KV_T *pool, const int64_t *tables, const int64_t *seq_lens, Shape s, Q_T *out,
         int num_threads) {
    const int64_t group = s.q_heads / s.kv_heads, dim = s.head_dim;
    const int64_t chunk = CHUNK_TOKENS > s.block_size ? CHUNK_TOKENS / s.block_size * s.block_size : s.block_size;
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
        scores = malloc(sizeof(float) * (score_start[s.rows] + 1));
        partial = malloc(sizeof(float) * (item_start[s.rows] + 1) * group * dim);
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
#pragma omp for schedule(static)
        for (int64_t i = 0; i < items; i++) { /* 1: the scores of one item */
            while (item_start[b + 1] <= i) b++;
            const int64_t len = seq_lens[b * s.len_stride], per = chunks_of(len, chunk);
            const int64_t h = (i - item_start[b]) / per, c = (i - item_start[b]) % per;
            const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
            CAT(NAME, _scores)(q, pool, tables + b * s.table_stride, len, &s, b, h, c * chunk, t1,
                               scores + score_start[b], prefetch_values);
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
            CAT(NAME, _values)(pool, tables + b * s.table_stride, len, &s, h, c * chunk, t1,
                               scores + score_start[b], partial + i * group * dim);
        }
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < s.rows * s.kv_heads; bh++) { /* 4: add the chunks, in order */
            const int64_t row = bh / s.kv_heads, h = bh % s.kv_heads;
            const int64_t per = chunks_of(seq_lens[row * s.len_stride], chunk);
            const float *first = partial + (item_start[row] + h * per) * group * dim;
            Q_T *o = out + (row * s.q_heads + h * group) * dim;
            for (int64_t e = 0; e < group * dim; e++) {
                float sum = first[e];
                for (int64_t c = 1; c < per; c++) sum += first[c * group * dim + e];
                o[e] = NARROW_Q1(sum);
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
