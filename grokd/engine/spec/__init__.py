"""Speculative decoding: cheap drafts of the next few tokens, verified by the target model in the
one forward pass of the continuous batch.

``ngram`` proposes drafts by prompt lookup and ``draft_model`` by a smaller model of the same
tokenizer, ``rejection`` decides per drafted token (exactly the target distribution for sampled
requests, the argmax for greedy ones), ``stats`` tracks each sequence's acceptance and pauses
drafting where it keeps failing, ``budget`` grants each step's drafted tokens where they pay for
their rows by the step times ``cost`` learnt. The engine glue is in
``engine.llm_engine``, the batch layout (one query row per verified position) in
``engine.model_runner``, the KV rollback of rejected tokens in ``engine.block_manager``.
"""
