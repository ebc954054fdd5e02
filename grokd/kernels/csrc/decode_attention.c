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
 * The work is split into (row, kv head, chunk of CHUNK_TOKENS) items so that one long context keeps
 * every thread busy. In general, phase 1 writes each item's scores, phase 2 does each (row, query
 * head)'s softmax over its whole context, phase 3 each item's partial weighted sum, phase 4 adds the
 * partials in chunk order. Where a one-pass kernel takes the call (the VNNI int8 path), each item is
 * done in one pass instead (flash-decoding: scores, a softmax against the chunk's own maximum, the
 * weighted sum while the chunk's values are still in cache), and the chunks are merged by their
 * maxima.
 *
 * This file is the walk; the kernels it runs per item are in decode_attention_portable.c (the
 * widened loops, every tier) and decode_attention_avx512.c (vdpbf16ps and VNNI), their interface in
 * decode_attention.h. Each entry point below chooses its call's kernels once, from what the build
 * compiled in and the call's shape:
 *   bf16 q, bf16 pool   with AVX512-BF16, q.k and (in bf16 mode, even block sizes, dim a multiple
 *                       of 32 up to 128) the weighted sums on vdpbf16ps, the widened loops' bits
 *   bf16 q, int8 pool   with AVX512-VNNI, q quantized to int8 and each item in one pass (bf16 mode,
 *                       dim 64 or 128, at most 16 query heads per kv head, even blocks of at most
 *                       256 tokens); with AVX512-BF16 alone, q.k on vdpbf16ps against keys made bf16
 *   otherwise           the widened loops
 */
#include <stdlib.h>

#include "decode_attention.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* softmax one (row, query head)'s scores in place; in bf16 mode the probabilities are rounded to
   bf16, as the reference's bf16 matmul takes them */
static void softmax_row(float *x, int64_t len, const Shape *s) {
    const float inv = 1.0f / exp_scores(x, len, scale_scores(x, len, s, row_temperature(s, len)));
    const int bf16 = s->bf16;
#pragma omp simd
    for (int64_t t = 0; t < len; t++) x[t] = bf16 ? round_bf16(x[t] * inv) : x[t] * inv;
}

/* a call's kernels: scores and values for the four phases, or one_pass for each item whole */
typedef struct {
    ScoresFn *scores;
    ValuesFn *values;
    OnePassFn *one_pass; /* NULL: the four phases */
} Kernels;

/* tokens per item: CHUNK_TOKENS rounded down to whole blocks, at least one block */
static int64_t chunk_tokens(const Shape *s) {
    return CHUNK_TOKENS > s->block_size ? CHUNK_TOKENS / s->block_size * s->block_size : s->block_size;
}

/* The walk over a call's items, with kernels k (chosen once by the entry point). Inlined into the
   entry points; gcc outlines the OpenMP region first, so inside it the element types are read at
   run time, once per output row written: the inner loops live in the kernels, which are typed.
   Returns 0, or 1 when scratch memory could not be allocated (nothing was written). */
static inline __attribute__((always_inline)) int decode_attention(Elem qt, Elem kt, const void *q, const void *pool,
                                                                  const int64_t *tables, const int64_t *seq_lens,
                                                                  Shape s, void *out, int num_threads,
                                                                  const Kernels *k) {
    const int64_t group = s.q_heads / s.kv_heads, dim = s.head_dim, chunk = chunk_tokens(&s);
    const int one_pass = k->one_pass != NULL;
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
    const int64_t value_bytes = score_start[s.rows] / s.q_heads * s.kv_heads * row_bytes(kt, dim);
    const int prefetch_values = value_bytes <= PREFETCH_VALUES_BYTES;
#pragma omp parallel num_threads(num_threads)
    {
        int64_t b = 0; /* items of a thread's static share are in row order */
        if (one_pass) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < items; i++) {
                while (item_start[b + 1] <= i) b++;
                /* chunk-major within a row: a thread's consecutive items read one block's kv heads in
                   turn, which lie together in the pool */
                const int64_t len = seq_lens[b * s.len_stride];
                const int64_t h = (i - item_start[b]) % s.kv_heads, c = (i - item_start[b]) / s.kv_heads;
                const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
                const Item it = {q, pool, tables + b * s.table_stride, &s, b, h, c * chunk, t1, row_temperature(&s, len)};
                k->one_pass(&it, partial + i * part);
            }
#pragma omp for schedule(static)
            for (int64_t bh = 0; bh < s.rows * s.kv_heads; bh++) { /* merge the chunks, in order */
                const int64_t row = bh / s.kv_heads, h = bh % s.kv_heads;
                const int64_t per = chunks_of(seq_lens[row * s.len_stride], chunk);
                const float *first = partial + (item_start[row] + h) * part; /* chunk c's: c * kv_heads further */
                const int64_t step = s.kv_heads * part, o = (row * s.q_heads + h * group) * dim;
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
                        narrow_q(qt, out, o + g * dim + d, sum);
                    }
                }
            }
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < items; i++) { /* 1: the scores of one item */
                while (item_start[b + 1] <= i) b++;
                const int64_t len = seq_lens[b * s.len_stride], per = chunks_of(len, chunk);
                const int64_t h = (i - item_start[b]) / per, c = (i - item_start[b]) % per;
                const int64_t t1 = (c + 1) * chunk < len ? (c + 1) * chunk : len;
                const Item it = {q, pool, tables + b * s.table_stride, &s, b, h, c * chunk, t1, row_temperature(&s, len)};
                k->scores(&it, scores + score_start[b] + h * group * len + c * chunk, len, prefetch_values);
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
                const Item it = {q, pool, tables + b * s.table_stride, &s, b, h, c * chunk, t1, row_temperature(&s, len)};
                k->values(&it, scores + score_start[b] + h * group * len + c * chunk, len, partial + i * part);
            }
#pragma omp for schedule(static)
            for (int64_t bh = 0; bh < s.rows * s.kv_heads; bh++) { /* 4: add the chunks, in order */
                const int64_t row = bh / s.kv_heads, h = bh % s.kv_heads;
                const int64_t per = chunks_of(seq_lens[row * s.len_stride], chunk);
                const float *first = partial + (item_start[row] + h * per) * part;
                const int64_t o = (row * s.q_heads + h * group) * dim;
                for (int64_t e = 0; e < group * dim; e++) {
                    float sum = first[e];
                    for (int64_t c = 1; c < per; c++) sum += first[c * part + e];
                    narrow_q(qt, out, o + e, sum);
                }
            }
        }
    }
    free(item_start), free(score_start), free(scores), free(partial);
    return 0;
}

int grokd_decode_attention_bf16(const uint16_t *q, const uint16_t *pool, const int64_t *tables,
                                const int64_t *seq_lens, Shape s, uint16_t *out, int num_threads) {
    Kernels k = {attn_scores_bf16_portable, attn_values_bf16_portable, NULL};
#if HAVE_DPBF16
    k.scores = attn_scores_bf16_dpbf16;
    if (s.bf16 && s.block_size % 2 == 0 && s.head_dim % 32 == 0 && s.head_dim <= 128)
        k.values = attn_values_bf16_dpbf16; /* token pairs never straddle a block */
#endif
    return decode_attention(ELEM_BF16, ELEM_BF16, q, pool, tables, seq_lens, s, out, num_threads, &k);
}

int grokd_decode_attention_f32(const float *q, const float *pool, const int64_t *tables, const int64_t *seq_lens,
                               Shape s, float *out, int num_threads) {
    const Kernels k = {attn_scores_f32_portable, attn_values_f32_portable, NULL};
    return decode_attention(ELEM_F32, ELEM_F32, q, pool, tables, seq_lens, s, out, num_threads, &k);
}

int grokd_decode_attention_bf16_i8(const uint16_t *q, const int8_t *pool, const int64_t *tables,
                                   const int64_t *seq_lens, Shape s, uint16_t *out, int num_threads) {
    Kernels k = {attn_scores_bf16_i8_portable, attn_values_i8_portable, NULL};
#if HAVE_DPBF16 || HAVE_VNNI
    k.scores = attn_scores_bf16_i8_avx512;
#endif
#if HAVE_VNNI
    if (s.bf16) k.values = attn_values_i8_vnni; /* which hands what it cannot take to the widened loop */
    const int64_t group = s.q_heads / s.kv_heads;
    if (s.bf16 && (s.head_dim == 64 || s.head_dim == 128) && group <= 16 && s.block_size % 2 == 0 &&
        chunk_tokens(&s) <= 256)
        k.one_pass = attn_one_pass_bf16_i8_vnni;
#endif
    return decode_attention(ELEM_BF16, ELEM_I8, q, pool, tables, seq_lens, s, out, num_threads, &k);
}

int grokd_decode_attention_f32_i8(const float *q, const int8_t *pool, const int64_t *tables, const int64_t *seq_lens,
                                  Shape s, float *out, int num_threads) {
    const Kernels k = {attn_scores_f32_i8_portable, attn_values_i8_portable, NULL};
    return decode_attention(ELEM_F32, ELEM_I8, q, pool, tables, seq_lens, s, out, num_threads, &k);
}

/* Lets the loader check that this library's OpenMP runtime is torch's: the address of one of its
   functions, which dladdr maps back to the file that provides it (NULL when built without OpenMP). */
void *grokd_omp_function(void) {
#ifdef _OPENMP
    return (void *)&omp_get_max_threads;
#else
    return NULL;
#endif
}
