"""Structured outputs: JSON schema / JSON object / tool-call grammars enforced token by token.

- ``specs``: what the server puts into ``SamplingParams.structured``;
- ``validation``: request fields -> spec, ``ValueError("<field>: <problem>")`` for bad input;
- ``backend``: compiles specs against the model's tokenizer (llguidance), makes per-sequence states;
- ``state``: the per-sequence mask / accept / terminated state the sampler drives;
- ``tool_calls``: constrained output -> OpenAI ``tool_calls`` and ``content``.
"""
