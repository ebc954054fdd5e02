/* Decode attention's AVX-512 kernels: bf16 pairs multiplied with vdpbf16ps (AVX512-BF16), int8
 * sums with vpdpbusd and vpdpwssd (AVX512-VNNI). This file compiles to nothing where the build's
 * flags lack both; decode_attention.c's entry points pick these kernels where it compiled them.
 *
 * bf16 q, bf16 pool (vdpbf16ps): q.k multiplies q against the keys as they lie, sixteen tokens at a
 * time, and the weighted sum takes two tokens per instruction. Lane i of vdpbf16ps's float32
 * accumulator adds the product of bf16 elements 2i + 1, then that of 2i, rounding after each add (as
 * Intel documents it, and as checked to the bit on random lanes). A product of two bf16 is exact in
 * float32, so these are the widened loops' additions, in their order: the widened q.k adds elements
 * 2i, 2i + 1 of the first 32, then 32 + 2i, 33 + 2i, ...; the vectors after the first have their
 * bf16 pairs swapped (q's once, K's by one rotate per 32 elements) so that the even element comes
 * first there too (the first vector starts from zero, where the order does not matter), and the
 * sums' trees are the widened loops'. So the results are the widened loops' bits, except that
 * vdpbf16ps reads denormal inputs as zero.
 *
 * bf16 q, int8 pool, with VNNI (as llama.cpp does with a q8_0 cache): q is quantized per head the
 * way the keys are (int8, scale max|q| / 127), and q.k is summed exactly in int32 by vpdpbusd over
 * key rows transposed sixteen tokens at a time, so the scores come out one token per lane, with no
 * horizontal sums; the weighted sum quantizes each head's p_t * scale_v(t) to int16 (one scale per
 * item: finer than the bf16 probabilities of the other paths) and sums in int32 with vpdpwssd, two
 * tokens per instruction. Each item is done in one pass (attn_one_pass_bf16_i8_vnni). Where q is not
 * finite the item's scores take vdpbf16ps, with its keys converted to bf16 (exact) sixteen tokens at
 * a time (float32 sums in another order than the widened loop's, so not its bits), or without
 * AVX512-BF16 the widened loop.
 */
#include "decode_attention.h"

#if HAVE_DPBF16 || HAVE_VNNI

/* ---- shared by the bf16 and the VNNI kernels ---------------------------------------------------- */

/* the sums of sixteen vectors, lane j the sum of a[j]: sum16's tree for each (lanes i and i + 8,
   then i + 4, i + 2, i + 1, so the same bits), the shuffles shared by all sixteen and half of them
   blends (which more of the core's pipes run): 17 shuffles where four sum16x4 calls take 40 */
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

#endif

/* ---- bf16 q, bf16 pool: vdpbf16ps --------------------------------------------------------------- */

#if HAVE_DPBF16
static inline __m512bh load_bf16x32(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

static inline __m512bh swap_bf16_pairs(__m512bh x) { return (__m512bh)_mm512_rol_epi32((__m512i)x, 16); }

/* q . k over dim (a multiple of 32) for one token: q's vectors after the first already swapped */
static inline __attribute__((always_inline)) f32x16 dot_dpbf16(const __m512bh *q, const uint16_t *k, int64_t dim) {
    __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), q[0], load_bf16x32(k));
    for (int64_t v = 1; v < dim / 32; v++) acc = _mm512_dpbf16_ps(acc, q[v], swap_bf16_pairs(load_bf16x32(k + 32 * v)));
    return acc;
}

/* q.k for the item's query heads: sixteen tokens at a time (their sums sharing the shuffles:
   sum16x16), then four (sum16x4), then one; element by element where dim is not a multiple of 32 */
static inline __attribute__((always_inline)) void scores_dpbf16(const Item *it, float *scores, int64_t stride,
                                                                int prefetch_values, const int64_t dim) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = dim;
    const int paired = dim % 32 == 0;
    __m512bh qb[group * (paired ? dim / 32 : 1)]; /* q in bf16 pairs, those after the first swapped */
    float qf[group * dim];
    for (int64_t g = 0; g < group; g++) {
        const uint16_t *qr = (const uint16_t *)q_head(ELEM_BF16, it, group, g);
        for (int64_t d = 0; d < dim; d++) qf[g * dim + d] = bf16_to_f32(qr[d]);
        if (paired)
            for (int64_t v = 0; v < dim / 32; v++) {
                const __m512bh x = load_bf16x32(qr + 32 * v);
                qb[g * (dim / 32) + v] = v ? swap_bf16_pairs(x) : x;
            }
    }
    const BlockStream keys = item_stream(ELEM_BF16, it, 0, dim);
    prefetch_first_blocks(&keys, it->t0, it->t1);
    for (int64_t t = it->t0; t < it->t1; t += bs) {
        const uint16_t *k = (const uint16_t *)key_block(&keys, it, t, prefetch_values);
        const int64_t n = it->t1 - t < bs ? it->t1 - t : bs;
        float *out = scores + (t - it->t0);
        int64_t r = 0;
        if (!paired) {
            for (; r < n; r++) score1_scalar(ELEM_BF16, qf, group, (const char *)(k + r * w), out + r, stride, dim);
            continue;
        }
        for (; r + 16 <= n; r += 16)
            for (int64_t g = 0; g < group; g++) {
                const __m512bh *qg = qb + g * (dim / 32);
                f32x16 a[16];
                for (int j = 0; j < 16; j++) a[j] = dot_dpbf16(qg, k + (r + j) * w, dim);
                const f32x16 dots = sum16x16(a);
                memcpy(out + g * stride + r, &dots, sizeof dots);
            }
        for (; r + 4 <= n; r += 4)
            for (int64_t g = 0; g < group; g++) {
                const __m512bh *qg = qb + g * (dim / 32);
                const uint16_t *kr = k + r * w;
                const f32x4 dots = sum16x4(dot_dpbf16(qg, kr, dim), dot_dpbf16(qg, kr + w, dim),
                                           dot_dpbf16(qg, kr + 2 * w, dim), dot_dpbf16(qg, kr + 3 * w, dim));
                memcpy(out + g * stride + r, &dots, sizeof dots);
            }
        for (; r < n; r++)
            for (int64_t g = 0; g < group; g++) out[g * stride + r] = sum16(dot_dpbf16(qb + g * (dim / 32), k + r * w, dim));
    }
}

void attn_scores_bf16_dpbf16(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    if (it->s->head_dim == 64)
        scores_dpbf16(it, scores, stride, prefetch_values, 64);
    else if (it->s->head_dim == 128)
        scores_dpbf16(it, scores, stride, prefetch_values, 128);
    else
        scores_dpbf16(it, scores, stride, prefetch_values, it->s->head_dim);
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
   `next` v_t+1 (zero past the end), pk[j][k] head j's probabilities (bf16_prob_pairs). Token t sits
   in the odd element and t + 1 in the even one, so p_t v_t is added first, as the widened loop adds
   it. The rows interleave per 128-bit lane (vpunpck[lh]wd), so the sums come out in that order
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

/* the widened loop's weighted sums with vdpbf16ps, two tokens per instruction, in passes of `hp`
   heads: for bf16 mode, whose probabilities are bf16 already, and an even block size, so that an
   item's blocks start on even token offsets and no pair straddles two blocks; a block's odd last
   token pairs with a zero row and a zero probability */
static inline __attribute__((always_inline)) void values_dpbf16(const Item *it, const float *probs, int64_t stride,
                                                                float *acc, const int64_t dim, const int hp) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = dim;
    const int64_t t0 = it->t0, t1 = it->t1, pairs = (t1 - t0 + 1) / 2;
    const BlockStream stream = item_stream(ELEM_BF16, it, 1, dim);
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
            const uint16_t *v = (const uint16_t *)stream_block(&stream, t, t1, g == 0);
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

/* heads per pass as the widened loop chooses them; dim a multiple of 32, at most 128 (the caller's
   condition) */
void attn_values_bf16_dpbf16(const Item *it, const float *probs, int64_t stride, float *acc) {
    const int64_t group = it->s->q_heads / it->s->kv_heads, dim = it->s->head_dim;
    if (dim == 64 && group % 4 == 0)
        values_dpbf16(it, probs, stride, acc, 64, 4);
    else if (dim == 64 && group % 3 == 0)
        values_dpbf16(it, probs, stride, acc, 64, 3);
    else if (dim == 64 && group > 1)
        values_dpbf16(it, probs, stride, acc, 64, 2);
    else if (dim == 64)
        values_dpbf16(it, probs, stride, acc, 64, 1);
    else if (dim == 128 && group > 1)
        values_dpbf16(it, probs, stride, acc, 128, 2);
    else if (dim == 128)
        values_dpbf16(it, probs, stride, acc, 128, 1);
    else
        values_dpbf16(it, probs, stride, acc, dim, 2);
}

/* 32 int8 -> 32 bf16 in order (exact: |v| <= 127 needs 7 bits), for vdpbf16ps against a bf16 q */
static inline __m512bh i8x32_to_bf16(const int8_t *p) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
    return _mm512_cvtne2ps_pbh(hi, lo);
}

/* bf16 q, int8 pool: the scores of sixteen tokens whose rows start at k, w bytes apart, each key row
   converted to bf16 once for all the group's heads (at most 16) and multiplied with vdpbf16ps, the
   sixteen sums sharing the shuffles (sum16x16) and multiplied by the keys' scales as one vector */
static inline __attribute__((always_inline)) void score16_i8_dpbf16(const __m512bh *qb, int64_t group,
                                                                    const int8_t *k, int64_t w, float *out,
                                                                    int64_t stride, const int64_t dim) {
    f32x16 a[16][16], row_scales; /* fixed sizes: variable-length arrays went through the stack */
    float sc[16];
    for (int j = 0; j < 16; j++) {
        const int8_t *kj = k + j * w;
        sc[j] = row_scale(ELEM_I8, (const char *)kj, dim);
        __m512bh kb[4];
        for (int64_t v = 0; v < dim / 32; v++) kb[v] = i8x32_to_bf16(kj + 32 * v);
        for (int64_t g = 0; g < group; g++) {
            const __m512bh *qg = qb + g * (dim / 32);
            __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), qg[0], kb[0]);
            for (int64_t v = 1; v < dim / 32; v++) acc = _mm512_dpbf16_ps(acc, qg[v], kb[v]);
            a[g][j] = (f32x16)acc;
        }
    }
    memcpy(&row_scales, sc, sizeof row_scales);
    for (int64_t g = 0; g < group; g++) {
        const f32x16 dots = sum16x16(a[g]) * row_scales;
        memcpy(out + g * stride, &dots, sizeof dots);
    }
}
#endif

/* ---- bf16 q, int8 pool: VNNI -------------------------------------------------------------------- */

#if HAVE_VNNI
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
   which propagates it). Vector code: a scalar max loop here cost a noticeable share of the scores'
   time. */
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

/* The scores of sixteen tokens whose rows start at k, w bytes apart, for the group's heads (at most
   16), q quantized (q32: four int8 a word, per head; q8_scale, q8_sum): the key rows transposed so
   that each lane holds one token (transpose16_epi32), and vpdpbusd adds four products of int8 a lane
   against q's matching four bytes, broadcast: the sixteen scores come out in one vector, with no
   reductions. vpdpbusd multiplies unsigned bytes by signed ones, so the keys are biased to unsigned
   (k + 128, one xor) and 128 * sum(q) taken off the exact integer sums:
   score = scale_q scale_k sum q8 k8. */
static inline __attribute__((always_inline)) void score16_vnni(const int32_t *q32, const float *q8_scale,
                                                               const int32_t *q8_sum, int64_t group, const int8_t *k,
                                                               int64_t w, float *out, int64_t stride,
                                                               const int64_t dim) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i acc[16][2];
    float sc[16];
    for (int j = 0; j < 16; j++) sc[j] = row_scale(ELEM_I8, (const char *)(k + j * w), dim);
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
        const __m512i dots = _mm512_sub_epi32(_mm512_add_epi32(acc[g][0], acc[g][1]), _mm512_set1_epi32(128 * q8_sum[g]));
        _mm512_storeu_ps(out + g * stride,
                         _mm512_mul_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(row_scales, _mm512_set1_ps(q8_scale[g]))));
    }
}
#endif

#if HAVE_DPBF16 || HAVE_VNNI
/* bf16 q, int8 pool: per block, sixteen tokens at a time on VNNI (q quantized) or, where q could not
   be quantized, on vdpbf16ps; what is left (a block's last tokens, or everything when neither takes
   the item) in the widened loop's steps */
static inline __attribute__((always_inline)) void scores_i8_avx512(const Item *it, float *scores, int64_t stride,
                                                                   int prefetch_values, const int64_t dim) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = row_bytes(ELEM_I8, dim);
    const int paired = dim % (2 * LANES) == 0;
    f32x16 qv[group * (paired ? dim / LANES : 1)];
    float qf[group * dim];
    widen_q_heads(ELEM_BF16, ELEM_I8, it, group, dim, paired, qf, qv);
#if HAVE_DPBF16
    __m512bh qb[group * (paired ? dim / 32 : 1)]; /* q as it lies, for vdpbf16ps against K made bf16 */
    for (int64_t g = 0; paired && g < group; g++) {
        const uint16_t *qr = (const uint16_t *)q_head(ELEM_BF16, it, group, g);
        for (int64_t v = 0; v < dim / 32; v++) qb[g * (dim / 32) + v] = load_bf16x32(qr + 32 * v);
    }
    const int dpbf16 = paired && dim <= 128 && group <= 16;
#endif
#if HAVE_VNNI
    int32_t q32[group * dim / 4 + 1]; /* q quantized per head as the keys are (quantize_q_i8), four a word */
    float q8_scale[group];
    int32_t q8_sum[group];
    int vnni = dim % 64 == 0 && dim <= 128 && group <= 16;
    for (int64_t g = 0; vnni && g < group; g++)
        vnni = quantize_q_i8(qf + g * dim, dim, (int8_t *)q32 + g * dim, &q8_scale[g], &q8_sum[g]);
#endif
    const BlockStream keys = item_stream(ELEM_I8, it, 0, dim);
    prefetch_first_blocks(&keys, it->t0, it->t1);
    for (int64_t t = it->t0; t < it->t1; t += bs) {
        const char *k = key_block(&keys, it, t, prefetch_values);
        const int64_t n = it->t1 - t < bs ? it->t1 - t : bs;
        float *out = scores + (t - it->t0);
        int64_t r = 0;
#if HAVE_VNNI
        if (vnni)
            for (; r + 16 <= n; r += 16)
                score16_vnni(q32, q8_scale, q8_sum, group, (const int8_t *)(k + r * w), w, out + r, stride, dim);
#endif
#if HAVE_DPBF16
        if (dpbf16)
            for (; r + 16 <= n; r += 16) score16_i8_dpbf16(qb, group, (const int8_t *)(k + r * w), w, out + r, stride, dim);
#endif
        if (paired) {
            for (; r + 4 <= n; r += 4) score4_widened(ELEM_I8, qv, group, k + r * w, w, out + r, stride, dim);
            for (; r < n; r++) score1_widened(ELEM_I8, qv, group, k + r * w, out + r, stride, dim);
        } else {
            for (; r < n; r++) score1_scalar(ELEM_I8, qf, group, k + r * w, out + r, stride, dim);
        }
    }
}

void attn_scores_bf16_i8_avx512(const Item *it, float *scores, int64_t stride, int prefetch_values) {
    if (it->s->head_dim == 64)
        scores_i8_avx512(it, scores, stride, prefetch_values, 64);
    else if (it->s->head_dim == 128)
        scores_i8_avx512(it, scores, stride, prefetch_values, 128);
    else
        scores_i8_avx512(it, scores, stride, prefetch_values, it->s->head_dim);
}
#endif

#if HAVE_VNNI
/* The weighted sums for an int8 pool in bf16 mode, in int32 on vpdpwssd, two tokens per instruction,
   in passes of `hp` heads. Each query head's weights p_t * scale_v(t) are quantized to int16 with one
   scale per item and head (max / 32767: finer than the bf16 probabilities they come from, and exact
   integer sums after); the values widen to int16 and interleave by token pairs, as in
   dpbf16_two_tokens. The int32 sums stay in range: at most 256 tokens of 32767 * 127. Returns 0 when
   it cannot take the item (an odd block size, a longer item, or weights that are not finite), which
   the caller then computes on the widened loop. */
static inline __attribute__((always_inline)) int values_vnni(const Item *it, const float *probs, int64_t stride,
                                                             float *acc, const int64_t dim, const int hp) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, bs = s->block_size, w = row_bytes(ELEM_I8, dim);
    const int64_t t0 = it->t0, t1 = it->t1, n = t1 - t0;
    if (bs % 2 || n > 256) return 0;
    const BlockStream stream = item_stream(ELEM_I8, it, 1, dim);
    prefetch_first_blocks(&stream, t0, t1);
    float vscale[256 + LANES]; /* the values' scales, in token order (read masked: past n is never set) */
    for (int64_t t = t0; t < t1;) {
        const char *v = stream_block(&stream, t, t1, 0);
        const int64_t m = t1 - t < bs ? t1 - t : bs;
        for (int64_t r = 0; r < m; r++, t++, v += w) vscale[t - t0] = row_scale(ELEM_I8, v, dim);
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
            const int8_t *v = (const int8_t *)stream_block(&stream, t, t1, g == 0);
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

/* bf16 mode: heads per pass 3, 4 or 2 at dim 64 (the first that divides the group), 2 at dim 128;
   other layouts, and items values_vnni refuses, on the widened loop */
void attn_values_i8_vnni(const Item *it, const float *probs, int64_t stride, float *acc) {
    const int64_t group = it->s->q_heads / it->s->kv_heads, dim = it->s->head_dim;
    int done = 0;
    if (dim == 64 && group % 3 == 0)
        done = values_vnni(it, probs, stride, acc, 64, 3);
    else if (dim == 64 && group % 4 == 0)
        done = values_vnni(it, probs, stride, acc, 64, 4);
    else if (dim == 64 && group % 2 == 0)
        done = values_vnni(it, probs, stride, acc, 64, 2);
    else if (dim == 128 && group % 2 == 0)
        done = values_vnni(it, probs, stride, acc, 128, 2);
    if (!done) attn_values_i8_portable(it, probs, stride, acc);
}

/* One item in one pass, flash-decoding style: its scores (which ask for its values too), their
   softmax against the item's own maximum, and the weighted sum of its values while those are still
   in cache. part = [group * dim sums, group maxima, group totals], merged across the row's chunks by
   the walk. Where the values of the whole call do not fit in cache, the four phases would read them
   from memory twice; and on a real step (the weights have flushed the caches) the phases' barriers
   leave DRAM idle during the softmax. The entry point's conditions: bf16 mode, dim 64 or 128, at
   most 16 query heads per kv head, an even block size, items of at most 256 tokens. */
void attn_one_pass_bf16_i8_vnni(const Item *it, float *part) {
    const Shape *s = it->s;
    const int64_t group = s->q_heads / s->kv_heads, dim = s->head_dim, n = it->t1 - it->t0;
    float x[16 * 256]; /* group <= 16 heads' scores of at most 256 tokens */
    attn_scores_bf16_i8_avx512(it, x, n, 1);
    float *top = part + group * dim, *total = top + group;
    for (int64_t g = 0; g < group; g++) {
        top[g] = scale_scores(x + g * n, n, s, it->temperature);
        total[g] = exp_scores(x + g * n, n, top[g]);
    }
    attn_values_i8_vnni(it, x, n, part);
}
#endif
