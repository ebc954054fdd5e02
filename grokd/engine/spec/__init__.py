"""Speculative decoding: cheap drafts of the next few tokens, verified by the target model in the
one forward pass of the continuous batch.

``ngram`` proposes drafts by prompt lookup, ``rejection`` decides per drafted token (exactly the
target distribution for sampled requests, the argmax for greedy ones), ``stats`` tracks each
sequence's acceptance and switches drafting off where it keeps failing. The engine glue is in
``engine.llm_engine``, the batch layout (one query row per verified position) in
``engine.model_runner``, the KV rollback of rejected tokens in ``engine.block_manager``.
"""
