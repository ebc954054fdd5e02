"""grokd's own GPU kernels, written in Triton: the fused MoE (``fused_moe``), the Grok release's
int8 weight-only GEMM (``int8_linear``) and paged attention (``paged_attention``). Each has a
PyTorch twin in ``grokd.kernels`` it is tested against, and ``kernels.dispatch`` selects them
(``--kernel-backend``). On a machine without a GPU they run on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``, set before this package is imported): slow but exact, which
is how CI checks them; ``runtime`` holds what differs between the two modes.

Importing this package imports ``triton``: ``kernels.dispatch`` does so only when the Triton
backend is chosen, so the rest of grokd never needs it."""
