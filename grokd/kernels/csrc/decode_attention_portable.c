/* Decode attention's widened loops: every element widened to float32 in registers, multiplied and
 * added in float32 (see decode_attention.c for the numerics and the walk that calls these).
 *
 * Plain C with gcc's vector extensions (16-float vectors, which gcc splits into 256-bit halves on
 * AVX2 and keeps whole on AVX-512), so they build for every tier; the only instructions named are an
 * int8 pool's widening loads (widen16_i8). On the AVX2 tier they are the whole kernel; above it they
 * serve what the AVX-512 kernels do not take.
 *
 * bf16 rows widen as even and odd elements (widen32_bf16), q the same way, so q.k needs no shuffle;
 * the weighted sums put the order back once per item (unpair32). int8 and float32 rows widen in
 * order. An int8 row is never dequantized to memory: q.k is summed against its int8 values and
 * multiplied by the key's scale once per token; the weighted sum multiplies each probability by the
 * value's scale once per token.
 */
#include "decode_attention.h"

/* q . k for the item's query heads, token by token: four tokens at a time (their sums sharing the
   shuffles), then one; element by element where dim is not a multiple of 32. Always inlined, so that
   the callers below fix the types and dim. */
static inline __attribute__((always_inline)) void scores_widened(Elem q, Elem kv, const Item *it, float *scores,
                                                                 int64_t stride, int prefetch_values,
                                                                 const int64_t dim) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = row_bytes(kv, dim);
    const int paired = dim % (2 * LANES) == 0;
    f32x16 qv[group * (paired ? dim / LANES : 1)];
    float qf[group * dim];
    widen_q_heads(q, kv, it, group, dim, paired, qf, qv);
    const BlockStream keys = item_stream(kv, it, 0, dim);
    prefetch_first_blocks(&keys, it->t0, it->t1);
    for (int64_t t = it->t0; t < it->t1; t += bs) {
        const char *k = key_block(&keys, it, t, prefetch_values);
        const int64_t n = it->t1 - t < bs ? it->t1 - t : bs;
        float *out = scores + (t - it->t0);
        int64_t r = 0;
        if (paired) {
            for (; r + 4 <= n; r += 4) score4_widened(kv, qv, group, k + r * w, w, out + r, stride, dim);
            for (; r < n; r++) score1_widened(kv, qv, group, k + r * w, out + r, stride, dim);
        } else {
            for (; r < n; r++) score1_scalar(kv, qf, group, k + r * w, out + r, stride, dim);
        }
    }
}

/* the head dims of real models as constants, so that the loops unroll over them */
static inline __attribute__((always_inline)) void scores_by_dim(Elem q, Elem kv, const Item *it, float *scores,
                                                                int64_t stride, int prefetch_values) {
    if (it->s->head_dim == 64)
        scores_widened(q, kv, it, scores, stride, prefetch_values, 64);
    else if (it->s->head_dim == 128)
        scores_widened(q, kv, it, scores, stride, prefetch_values, 128);
    else
        scores_widened(q, kv, it, scores, stride, prefetch_values, it->s->head_dim);
}

void attn_scores_bf16_portable(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    scores_by_dim(ELEM_BF16, ELEM_BF16, it, scores, stride, prefetch_values);
}

void attn_scores_f32_portable(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    scores_by_dim(ELEM_F32, ELEM_F32, it, scores, stride, prefetch_values);
}

void attn_scores_bf16_i8_portable(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    scores_by_dim(ELEM_BF16, ELEM_I8, it, scores, stride, prefetch_values);
}

void attn_scores_f32_i8_portable(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    scores_by_dim(ELEM_F32, ELEM_I8, it, scores, stride, prefetch_values);
}

/* acc[group, dim] = sum over the item's tokens of probs . v, when dim is a multiple of 32 and at
   most 128: passes of `hp` query heads (a compile-time constant, at most 4), so that each v load
   serves all of them while their hp * dim / 16 accumulators stay in registers; a last pass short of
   heads repeats a head's probabilities and drops its sums. A scaled row's scale multiplies the
   probabilities, once per token. */
static inline __attribute__((always_inline)) void values_widened(Elem kv, const Item *it, const float *probs,
                                                                 int64_t stride, float *acc, const int64_t dim,
                                                                 const int hp) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, vecs = dim / LANES, w = row_bytes(kv, dim);
    const int64_t t0 = it->t0, t1 = it->t1;
    const BlockStream stream = item_stream(kv, it, 1, dim);
    for (int64_t g = 0; g < group; g += hp) {
        const float *p[4];
        for (int j = 0; j < hp; j++) p[j] = probs + (g + j < group ? g + j : g) * stride;
        f32x16 sum[4][8] = {{{0}}};
        if (g == 0)
            prefetch_first_blocks(&stream, t0, t1);
        for (int64_t t = t0; t < t1;) {
            const char *v = stream_block(&stream, t, t1, g == 0);
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float scale = row_scale(kv, v, dim);
                float pv[4];
                for (int j = 0; j < hp; j++) pv[j] = p[j][t - t0] * scale;
                for (int64_t c = 0; c < vecs; c += 2) {
                    f32x16 x0, x1;
                    widen32_kv(kv, v, c * LANES, &x0, &x1);
                    for (int j = 0; j < hp; j++) {
                        sum[j][c] += pv[j] * x0;
                        sum[j][c + 1] += pv[j] * x1;
                    }
                }
            }
        }
        for (int j = 0; j < hp; j++)
            if (g + j < group)
                for (int64_t c = 0; c < vecs; c += 2) unpair32(kv, acc + (g + j) * dim + c * LANES, sum[j][c], sum[j][c + 1]);
    }
}

/* the same for any dim: two query heads per pass, scalar loops */
static inline __attribute__((always_inline)) void values_scalar(Elem kv, const Item *it, const float *probs,
                                                                int64_t stride, float *acc) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, dim = s->head_dim, w = row_bytes(kv, dim);
    const int64_t t0 = it->t0, t1 = it->t1;
    const BlockStream stream = item_stream(kv, it, 1, dim);
    for (int64_t g = 0; g < group; g += 2) {
        const int two = g + 1 < group;
        const float *p0 = probs + g * stride, *p1 = two ? p0 + stride : p0;
        float *a0 = acc + g * dim, *a1 = a0 + dim;
        for (int64_t d = 0; d < dim; d++) a0[d] = 0.0f;
        if (two)
            for (int64_t d = 0; d < dim; d++) a1[d] = 0.0f;
        for (int64_t t = t0; t < t1;) {
            const char *v = stream_block(&stream, t, t1, 0);
            const int64_t n = t1 - t < bs ? t1 - t : bs;
            for (int64_t r = 0; r < n; r++, t++, v += w) {
                const float scale = row_scale(kv, v, dim), pv0 = p0[t - t0] * scale, pv1 = p1[t - t0] * scale;
                for (int64_t d = 0; d < dim; d++) {
                    a0[d] += pv0 * widen1(kv, v, d);
                    if (two) a1[d] += pv1 * widen1(kv, v, d);
                }
            }
        }
    }
}

/* heads per pass, within the 16 accumulators a pass may keep (dim 64: 4 vectors a head; dim 128: 8):
   at dim 64, 4 or 3 when that divides the group (SmolLM2's 3 heads in one pass, where two passes
   would widen every value twice), else 2 (1 for a group of one) */
static inline __attribute__((always_inline)) void values_by_shape(Elem kv, const Item *it, const float *probs,
                                                                  int64_t stride, float *acc) {
    const int64_t group = it->s->q_heads / it->s->kv_heads, dim = it->s->head_dim;
    if (dim == 64 && group % 4 == 0)
        values_widened(kv, it, probs, stride, acc, 64, 4);
    else if (dim == 64 && group % 3 == 0)
        values_widened(kv, it, probs, stride, acc, 64, 3);
    else if (dim == 64)
        values_widened(kv, it, probs, stride, acc, 64, group == 1 ? 1 : 2);
    else if (dim == 128)
        values_widened(kv, it, probs, stride, acc, 128, group == 1 ? 1 : 2);
    else if (dim % (2 * LANES) == 0 && dim <= 8 * LANES)
        values_widened(kv, it, probs, stride, acc, dim, 2);
    else
        values_scalar(kv, it, probs, stride, acc);
}

void attn_values_bf16_portable(const Item *it, const float *probs, int64_t stride, float *acc) {
    values_by_shape(ELEM_BF16, it, probs, stride, acc);
}

void attn_values_f32_portable(const Item *it, const float *probs, int64_t stride, float *acc) {
    values_by_shape(ELEM_F32, it, probs, stride, acc);
}

void attn_values_i8_portable(const Item *it, const float *probs, int64_t stride, float *acc) {
    values_by_shape(ELEM_I8, it, probs, stride, acc);
}
