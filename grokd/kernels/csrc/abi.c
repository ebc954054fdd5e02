/* The argument structs' layout as this compiler lays them out, with their fields' names: the test
 * against the ctypes mirror (grokd/kernels/c_abi.py, tests/kernels/test_c_abi.py) reads it here.
 * Each struct's fields are listed once (FIELDS), in declaration order, for both answers. */
#include <stddef.h>

#include "grokd.h"

#define SHAPE_FIELDS(X)                                                                                \
    X(Shape, rows) X(Shape, q_heads) X(Shape, kv_heads) X(Shape, block_size) X(Shape, head_dim)        \
    X(Shape, num_blocks) X(Shape, q_row_stride) X(Shape, q_head_stride) X(Shape, table_stride)         \
    X(Shape, len_stride) X(Shape, scale) X(Shape, softcap) X(Shape, bf16) X(Shape, temperature_len)
#define LAYER_WEIGHTS_FIELDS(X)                                                                        \
    X(LayerWeights, norm1) X(LayerWeights, norm2) X(LayerWeights, qkv) X(LayerWeights, o)             \
    X(LayerWeights, gate_up) X(LayerWeights, down) X(LayerWeights, qkv_scales) X(LayerWeights, o_scales) \
    X(LayerWeights, gate_up_scales) X(LayerWeights, down_scales) X(LayerWeights, hidden)              \
    X(LayerWeights, heads) X(LayerWeights, kv_heads) X(LayerWeights, head_dim)                        \
    X(LayerWeights, intermediate) X(LayerWeights, eps) X(LayerWeights, scale) X(LayerWeights, kind)
#define STEP_KV_FIELDS(X)                                                                              \
    X(StepKV, cos) X(StepKV, sin) X(StepKV, pool) X(StepKV, num_blocks) X(StepKV, block_size)          \
    X(StepKV, slots) X(StepKV, tables) X(StepKV, seq_lens) X(StepKV, table_stride) X(StepKV, len_stride) \
    X(StepKV, pool_int8)

#define OFFSET(type, field) out[n++] = (int64_t)offsetof(type, field);
#define NAME(type, field) #field ","

int64_t grokd_struct_layout(int32_t which, int64_t *out) {
    int64_t n = 0;
    switch (which) {
    case GROKD_SHAPE: out[n++] = sizeof(Shape); SHAPE_FIELDS(OFFSET) break;
    case GROKD_LAYER_WEIGHTS: out[n++] = sizeof(LayerWeights); LAYER_WEIGHTS_FIELDS(OFFSET) break;
    case GROKD_STEP_KV: out[n++] = sizeof(StepKV); STEP_KV_FIELDS(OFFSET) break;
    default: return 0;
    }
    return n;
}

const char *grokd_struct_fields(int32_t which) {
    switch (which) {
    case GROKD_SHAPE: return SHAPE_FIELDS(NAME);
    case GROKD_LAYER_WEIGHTS: return LAYER_WEIGHTS_FIELDS(NAME);
    case GROKD_STEP_KV: return STEP_KV_FIELDS(NAME);
    default: return "";
    }
}
