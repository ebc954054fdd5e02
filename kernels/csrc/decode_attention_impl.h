/* One storage type's decode attention (see decode_attention.c), included with T (the pool's and
 * q's element type), NAME, WIDEN1 (one element to float32), WIDEN32 / UNPAIR32 (32 elements to two
 * float32 vectors in the kernel's lane order, and back) and NARROW1 (float32 to T) defined. */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* q . k for the `group` query heads of kv head h, tokens [t0, t1) (t0 on a block boundary);
   always inlined so that the callers below can fix `dim` and the compiler unroll over it */
static inline __attribute__((always_inline)) void CAT(NAME, _scores_dim)(
    const T *q, const T *pool, const int64_t *table, int64_t len, const Shape *s, int64_t b, int64_t h,
    int64_t t0, int64_t t1, float *scores, const int64_t dim) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES;
    const int paired = dim % (2 * LANES) == 0;
    f32x16 qv[group * (paired ? vecs : 1)];
    float qf[group * dim];
    for (int64_t g = 0; g < group; g++) {
        const T *qr = q + b * s->q_row_stride + (h * group + g) * s->q_head_stride;
        for (int64_t d = 0; d < dim; d++) qf[g * dim + d] = WIDEN1(qr[d]);
        if (paired)
            for (int64_t v = 0; v < vecs; v += 2) WIDEN32(qr + v * LANES, &qv[g * vecs + v], &qv[g * vecs + v + 1]);
    }
    for (int64_t t = t0; t < t1;) {
        const T *k = pool + (table[t / bs] * s->kv_heads + h) * bs * dim;
        const int64_t n = t1 - t < bs ? t1 - t : bs;
        if (t + PREFETCH_BLOCKS * bs < t1) prefetch_block(pool + (table[t / bs + PREFETCH_BLOCKS] * s->kv_heads + h) * bs * dim, bs * dim * sizeof(T));
        int64_t r = 0;
        if (paired) /* four tokens at a time, so that their sums share the shuffles (sum16x4) */
            for (; r + 4 <= n; r += 4, t += 4, k += 4 * dim) {
                f32x16 kv[4][vecs];
                for (int j = 0; j < 4; j++)
                    for (int64_t v = 0; v < vecs; v += 2) WIDEN32(k + j * dim + v * LANES, &kv[j][v], &kv[j][v + 1]);
                for (int64_t g = 0; g < group; g++) {
                    const f32x16 *qg = qv + g * vecs;
                    f32x16 a0 = qg[0] * kv[0][0], a1 = qg[0] * kv[1][0], a2 = qg[0] * kv[2][0], a3 = qg[0] * kv[3][0];
                    for (int64_t v = 1; v < vecs; v++) {
                        a0 += qg[v] * kv[0][v];
                        a1 += qg[v] * kv[1][v];
                        a2 += qg[v] * kv[2][v];
                        a3 += qg[v] * kv[3][v];
                    }
                    const f32x4 dots = sum16x4(a0, a1, a2, a3);
                    memcpy(scores + (h * group + g) * len + t, &dots, sizeof dots);
                }
            }
        for (; r < n; r++, t++, k += dim) {
            float *out = scores + h * group * len + t;
            if (paired) {
                f32x16 kv[vecs];
                for (int64_t v = 0; v < vecs; v += 2) WIDEN32(k + v * LANES, &kv[v], &kv[v + 1]);
                for (int64_t g = 0; g < group; g++) {
                    f32x16 acc = qv[g * vecs] * kv[0];
                    for (int64_t v = 1; v < vecs; v++) acc += qv[g * vecs + v] * kv[v];
                    out[g * len] = sum16(acc);
                }
            } else {
                for (int64_t g = 0; g < group; g++) {
                    float dot = 0.0f;
                    for (int64_t d = 0; d < dim; d++) dot += qf[g * dim + d] * WIDEN1(k[d]);
                    out[g * len] = dot;
                }
            }
        }
    }
}

static void CAT(NAME, _scores)(const T *q, const T *pool, const int64_t *table, int64_t len, const Shape *s,
                               int64_t b, int64_t h, int64_t t0, int64_t t1, float *scores) {
    if (s->head_dim == 64)
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, 64);
    else if (s->head_dim == 128)
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, 128);
    else
        CAT(NAME, _scores_dim)(q, pool, table, len, s, b, h, t0, t1, scores, s->head_dim);
}

/* acc[group, dim] = sum over tokens [t0, t1) of probs . v, for kv head h; one query head at a time
   so that its accumulators stay in registers */
static inline __attribute__((always_inline)) void CAT(NAME, _values_dim)(
    const T *pool, const int64_t *table, int64_t len, const Shape *s, int64_t h, int64_t t0, int64_t t1,
    const float *probs, float *acc, const int64_t dim) {
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES;
    const T *values = pool + s->num_blocks * s->kv_heads * bs * dim;
    for (int64_t g = 0; g < group; g += 2) { /* two query heads per pass: each v load serves both */
        const int two = g + 1 < group;
        const float *p0 = probs + (h * group + g) * len, *p1 = two ? p0 + len : p0;
        float *a0 = acc + g * dim, *a1 = a0 + dim;
        if (dim % (2 * LANES) == 0 && vecs <= 8) {
            f32x16 sum0[8] = {{0}}, sum1[8] = {{0}};
            for (int64_t t = t0; t < t1;) {
                const T *v = values + (table[t / bs] * s->kv_heads + h) * bs * dim;
                const int64_t n = t1 - t < bs ? t1 - t : bs;
                if (g == 0 && t + PREFETCH_BLOCKS * bs < t1)
                    prefetch_block(values + (table[t / bs + PREFETCH_BLOCKS] * s->kv_heads + h) * bs * dim, bs * dim * sizeof(T));
                for (int64_t r = 0; r < n; r++, t++, v += dim) {
                    for (int64_t c = 0; c < vecs; c += 2) {
                        f32x16 x0, x1;
                        WIDEN32(v + c * LANES, &x0, &x1);
                        sum0[c] += p0[t] * x0;
                        sum0[c + 1] += p0[t] * x1;
                        sum1[c] += p1[t] * x0;
                        sum1[c + 1] += p1[t] * x1;
                    }
                }
            }
            for (int64_t c = 0; c < vecs; c += 2) {
                UNPAIR32(a0 + c * LANES, sum0[c], sum0[c + 1]);
                if (two) UNPAIR32(a1 + c * LANES, sum1[c], sum1[c + 1]);
            }
        } else {
            for (int64_t d = 0; d < dim; d++) a0[d] = 0.0f;
            if (two)
                for (int64_t d = 0; d < dim; d++) a1[d] = 0.0f;
            for (int64_t t = t0; t < t1;) {
                const T *v = values + (table[t / bs] * s->kv_heads + h) * bs * dim;
                const int64_t n = t1 - t < bs ? t1 - t : bs;
                for (int64_t r = 0; r < n; r++, t++, v += dim)
                    for (int64_t d = 0; d < dim; d++) {
                        a0[d] += p0[t] * WIDEN1(v[d]);
                        if (two) a1[d] += p1[t] * WIDEN1(v[d]);
                    }
            }
        }
    }
}

static void CAT(NAME, _values)(const T *pool, const int64_t *table, int64_t len, const Shape *s, int64_t h,
                               int64_t t0, int64_t t1, const float *probs, float *acc) {
    if (s->head_dim == 64)
        CAT(NAME, _values_dim)(pool, table, len, s, h, t0, t1, probs, acc, 64);
    else if (s->head_dim == 128)
        CAT(NAME, _values_dim)(pool, table, len, s, h, t0, t1, probs, acc, 128);
    else
        CAT(NAME, _values_dim)(pool, table, len, s, h, t0, t1, probs, acc, s->head_dim);
}

/* Returns 0, or 1 when scratch memory could not be allocated (nothing was written). */
int NAME(const T *q, const T *pool, const int64_t *tables, const int64_t *seq_lens, Shape s, T *out,
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
                               scores + score_start[b]);
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
            T *o = out + (row * s.q_heads + h * group) * dim;
            for (int64_t e = 0; e < group * dim; e++) {
                float sum = first[e];
                for (int64_t c = 1; c < per; c++) sum += first[c * group * dim + e];
                o[e] = NARROW1(sum);
            }
        }
    }
    free(item_start), free(score_start), free(scores), free(partial);
    return 0;
}

#undef CAT
#undef CAT2
