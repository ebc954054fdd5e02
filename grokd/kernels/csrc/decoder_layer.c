/* One pre-norm SwiGLU decoder layer (Llama's) for a decode-only step, in one call: RMSNorm, the
 * qkv projection, RoPE and the KV write, paged decode attention, the output projection and the
 * residual add, then RMSNorm, gate/up, silu(gate) * up, down and the second residual add. Each
 * stage is the kernel the PyTorch-side path already calls (this file only chains them), so a
 * batch-1 step stops paying about a hundred microseconds of Python and op dispatch per layer.
 * Twin: the model's own layer (engine/models/llama.py), which tests/kernels/test_decoder_layer.py
 * compares it to. Built by kernels/cpu_build.py; bf16 activations with the CPU tier's bf16 projections or
 * weight-only int8 ones (--weights-dtype int8), over a bf16 or an int8 KV pool. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "grokd.h"

#if defined(__x86_64__) && defined(GROKD_LIBMVEC)
#pragma omp declare simd notinbranch
#endif
extern float expf(float);

/* out [rows, n] = x [rows, k] . W^T through whichever projection kernel the weights were packed for */
static int project(const uint16_t *x, int64_t rows, int64_t x_stride, const void *packed, const float *scales,
                   int kind, int64_t n, int64_t k, uint16_t *out, int num_threads) {
    if (kind == 2)
        return grokd_linear_int8_vnni(x, rows, x_stride, (const int8_t *)packed, scales, n, k, out, num_threads);
    if (kind == 1) return grokd_linear_int8(x, rows, x_stride, (const int8_t *)packed, scales, n, k, out, num_threads);
    return grokd_linear_bf16(x, rows, x_stride, (const uint16_t *)packed, n, k, out, num_threads);
}

/* x [rows, hidden] (the residual stream, updated in place). Returns 0, or nonzero when a stage
   refused its inputs or scratch memory ran out (x is then unspecified: the caller passes a copy);
   the stages after a refusal do not run, so none reads the pool with arguments a stage rejected. */
int grokd_decoder_layer_bf16(uint16_t *x, int64_t rows, LayerWeights w, StepKV kv, int num_threads) {
    const int64_t hidden = w.hidden, qkv_n = (w.heads + 2 * w.kv_heads) * w.head_dim;
    const int64_t q_n = w.heads * w.head_dim, inter = w.intermediate;
    uint16_t *h = malloc(sizeof(uint16_t) * rows * (hidden + qkv_n + q_n + hidden + 3 * inter));
    if (!h) return 1;
    uint16_t *qkv = h + rows * hidden, *att = qkv + rows * qkv_n, *proj = att + rows * q_n;
    uint16_t *gate_up = proj + rows * hidden, *act = gate_up + rows * 2 * inter;
    int status = 0;
    grokd_rms_norm_bf16(x, rows, hidden, hidden, w.norm1, w.eps, h, num_threads);
    status |= project(h, rows, hidden, w.qkv, w.qkv_scales, w.kind, qkv_n, hidden, qkv, num_threads);
    if (status) goto done;
    const Shape s = {rows, w.heads, w.kv_heads, kv.block_size, w.head_dim, kv.num_blocks, qkv_n, w.head_dim,
                     kv.table_stride, kv.len_stride, w.scale, 0.0f, 1};
    if (kv.pool_int8) {
        status |= grokd_rope_write_kv_bf16_i8(qkv, rows, qkv_n, w.heads, w.kv_heads, w.head_dim, kv.cos, kv.sin,
                                              kv.pool, kv.num_blocks, kv.block_size, kv.slots, num_threads);
        if (status) goto done;
        status |= grokd_decode_attention_bf16_i8(qkv, kv.pool, kv.tables, kv.seq_lens, s, att, num_threads);
    } else {
        status |= grokd_rope_write_kv_bf16(qkv, rows, qkv_n, w.heads, w.kv_heads, w.head_dim, kv.cos, kv.sin,
                                           kv.pool, kv.num_blocks, kv.block_size, kv.slots, num_threads);
        if (status) goto done;
        status |= grokd_decode_attention_bf16(qkv, kv.pool, kv.tables, kv.seq_lens, s, att, num_threads);
    }
    if (status) goto done;
    status |= project(att, rows, q_n, w.o, w.o_scales, w.kind, hidden, q_n, proj, num_threads);
    if (status) goto done;
    for (int64_t i = 0; i < rows * hidden; i++) x[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));
    grokd_rms_norm_bf16(x, rows, hidden, hidden, w.norm2, w.eps, h, num_threads);
    status |= project(h, rows, hidden, w.gate_up, w.gate_up_scales, w.kind, 2 * inter, hidden, gate_up, num_threads);
    if (status) goto done;
#pragma omp parallel for num_threads(num_threads) if (rows * inter >= 65536) schedule(static)
    for (int64_t r = 0; r < rows; r++) { /* silu(gate) rounded to bf16, times up, rounded (torch's order) */
        const uint16_t *gate = gate_up + r * 2 * inter, *up = gate + inter;
#pragma omp simd
        for (int64_t i = 0; i < inter; i++) {
            const float g = bf16_to_f32(gate[i]);
            act[r * inter + i] = f32_to_bf16(round_bf16(g / (1.0f + expf(-g))) * bf16_to_f32(up[i]));
        }
    }
    status |= project(act, rows, inter, w.down, w.down_scales, w.kind, hidden, inter, proj, num_threads);
    if (!status)
        for (int64_t i = 0; i < rows * hidden; i++) x[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));
done:
    free(h);
    return status;
}

/* A decode step's whole stack of layers in one call: layer i reads and writes pools[i] (the step's
   other KV arguments are shared); then, when final_norm is given and every layer ran, the model's
   final RMSNorm of x into normed. Returns how many layers ran: n, or the index of the first layer
   that refused, with x restored to that layer's input, so that the caller runs the rest with the
   model's ops (which rewrite the same KV slots). Why: from Python, each layer still cost tens of
   microseconds of module calls, checks and argument structs around its C call, and a separate call
   for the final norm more (Python and torch run with the caches cold from the weights;
   benchmarks/RESULTS.md#cpu-decode-kernels). */
int64_t grokd_decoder_layers_bf16(uint16_t *x, int64_t rows, const LayerWeights *layers, void *const *pools,
                                  int64_t n, StepKV kv, const uint16_t *final_norm, float eps, uint16_t *normed,
                                  int num_threads) {
    if (n <= 0) return 0;
    const int64_t hidden = layers[0].hidden;
    const size_t bytes = sizeof(uint16_t) * (size_t)(rows * hidden);
    uint16_t *before = malloc(bytes ? bytes : 1);
    if (!before) return 0;
    int64_t done = 0;
    for (; done < n; done++) {
        memcpy(before, x, bytes);
        kv.pool = pools[done];
        if (grokd_decoder_layer_bf16(x, rows, layers[done], kv, num_threads) != 0) {
            memcpy(x, before, bytes);
            break;
        }
    }
    free(before);
    if (done == n && final_norm) grokd_rms_norm_bf16(x, rows, hidden, hidden, final_norm, eps, normed, num_threads);
    return done;
}
