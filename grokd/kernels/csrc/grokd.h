/* The C kernels' ABI in one place: the argument structs passed by value from Python (ctypes mirrors
 * them in grokd/kernels/c_abi.py) and every exported function. Every source includes this header,
 * so a prototype that drifts from its definition fails the build; grokd_struct_layout reports each
 * struct's size and field offsets, and tests/kernels/test_c_abi.py compares them with the ctypes
 * mirror, so a field that drifts fails a test instead of corrupting memory. */
#ifndef GROKD_H
#define GROKD_H

#include <stdint.h>

/* one decode-attention call's sizes, strides in elements; temperature_len > 0: Grok-2's length
   temperature (a row's capped scores times log2(p) / log2(temperature_len), p = its seq_len - 1,
   when p > temperature_len) */
typedef struct {
    int64_t rows, q_heads, kv_heads, block_size, head_dim, num_blocks;
    int64_t q_row_stride, q_head_stride, table_stride, len_stride;
    float scale, softcap;
    int32_t bf16, temperature_len;
} Shape;

/* one decoder layer's weights for grokd_decoder_layer_bf16 */
typedef struct {
    const uint16_t *norm1, *norm2;           /* [hidden] */
    const void *qkv, *o, *gate_up, *down;    /* projections packed as `kind` says */
    const float *qkv_scales, *o_scales, *gate_up_scales, *down_scales; /* int8: one per output */
    int64_t hidden, heads, kv_heads, head_dim, intermediate;
    float eps, scale;
    int32_t kind; /* the projections' packing: 0 bf16 panels, 1 int8 panels, 2 int8 pairs for vpdpwssd */
} LayerWeights;

/* a decode step's KV arguments, shared by its layers */
typedef struct {
    const uint16_t *cos, *sin; /* [rows, head_dim] */
    void *pool;                /* [2, num_blocks, kv_heads, block_size, head_dim (+ 4 when int8)] */
    int64_t num_blocks, block_size;
    const int64_t *slots, *tables, *seq_lens;
    int64_t table_stride, len_stride;
    int32_t pool_int8; /* the pool holds int8 rows with their scales (kernels.attention.quantize_kv) */
} StepKV;

enum { GROKD_SHAPE = 0, GROKD_LAYER_WEIGHTS = 1, GROKD_STEP_KV = 2 };

/* abi.c: writes sizeof and then each field's offset, in declaration order, of struct `which` into
   out (room for 32) and returns how many numbers it wrote, or 0 for an unknown struct; and the
   fields' names in the same order, each followed by a comma ("" for an unknown struct) */
int64_t grokd_struct_layout(int32_t which, int64_t *out);
const char *grokd_struct_fields(int32_t which);

/* argmax.c */
void grokd_argmax_f32(const float *x, int64_t rows, int64_t cols, int64_t stride, int64_t *out, int num_threads);

/* decode_attention.c: 0 done, nonzero refused (nothing written) */
int grokd_decode_attention_bf16(const uint16_t *q, const uint16_t *pool, const int64_t *tables,
                                const int64_t *seq_lens, Shape s, uint16_t *out, int num_threads);
int grokd_decode_attention_f32(const float *q, const float *pool, const int64_t *tables, const int64_t *seq_lens,
                               Shape s, float *out, int num_threads);
int grokd_decode_attention_bf16_i8(const uint16_t *q, const int8_t *pool, const int64_t *tables,
                                   const int64_t *seq_lens, Shape s, uint16_t *out, int num_threads);
int grokd_decode_attention_f32_i8(const float *q, const int8_t *pool, const int64_t *tables, const int64_t *seq_lens,
                                  Shape s, float *out, int num_threads);
void *grokd_omp_function(void);

/* linear.c */
int grokd_linear_bf16_available(void);
int grokd_linear_bf16(const uint16_t *x, int64_t m, int64_t x_stride, const uint16_t *packed, int64_t n, int64_t k,
                      uint16_t *out, int num_threads);
int grokd_linear_int8_available(void);
int grokd_linear_int8(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                      int64_t n, int64_t k, uint16_t *out, int num_threads);
int grokd_linear_int8_vnni_available(void);
int grokd_linear_int8_vnni(const uint16_t *x, int64_t m, int64_t x_stride, const int8_t *packed, const float *scales,
                           int64_t n, int64_t k, uint16_t *out, int num_threads);

/* rms_norm.c */
void grokd_rms_norm_bf16(const uint16_t *x, int64_t rows, int64_t dim, int64_t x_stride, const uint16_t *weight,
                         float eps, uint16_t *out, int num_threads);
void grokd_rms_norm_f32(const float *x, int64_t rows, int64_t dim, int64_t x_stride, const float *weight, float eps,
                        float *out, int num_threads);

/* rope_write_kv.c */
int grokd_rope_write_kv_bf16(uint16_t *qkv, int64_t tokens, int64_t row_stride, int64_t heads, int64_t kv_heads,
                             int64_t dim, const uint16_t *cos, const uint16_t *sin, uint16_t *pool,
                             int64_t num_blocks, int64_t block_size, const int64_t *slots, int num_threads);
int grokd_rope_write_kv_f32(float *qkv, int64_t tokens, int64_t row_stride, int64_t heads, int64_t kv_heads,
                            int64_t dim, const float *cos, const float *sin, float *pool, int64_t num_blocks,
                            int64_t block_size, const int64_t *slots, int num_threads);
int grokd_rope_write_kv_bf16_i8(uint16_t *qkv, int64_t tokens, int64_t row_stride, int64_t heads, int64_t kv_heads,
                                int64_t dim, const uint16_t *cos, const uint16_t *sin, int8_t *pool,
                                int64_t num_blocks, int64_t block_size, const int64_t *slots, int num_threads);
int grokd_rope_write_kv_f32_i8(float *qkv, int64_t tokens, int64_t row_stride, int64_t heads, int64_t kv_heads,
                               int64_t dim, const float *cos, const float *sin, int8_t *pool, int64_t num_blocks,
                               int64_t block_size, const int64_t *slots, int num_threads);

/* decoder_layer.c */
int grokd_decoder_layer_bf16(uint16_t *x, int64_t rows, LayerWeights w, StepKV kv, int num_threads);
int64_t grokd_decoder_layers_bf16(uint16_t *x, int64_t rows, const LayerWeights *layers, void *const *pools,
                                  int64_t n, StepKV kv, const uint16_t *final_norm, float eps, uint16_t *normed,
                                  int num_threads);

#endif
