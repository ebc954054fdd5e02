"""Model architectures. Each is a plain ``torch.nn.Module`` with the same step interface:

``forward(input_ids [T], positions [T], kv_caches: list[Tensor], meta: AttentionMetadata) -> hidden [T, D]``
``compute_logits(hidden [n, D]) -> float32 logits [n, V]``
``load_weights(named_tensors)`` consumes ``Checkpoint.tensors()``.

Each model class exposes ``num_layers``, ``num_kv_heads``, ``head_dim``, ``vocab_size`` and
``max_position_embeddings`` so the engine can size the KV cache without knowing the architecture.
"""
