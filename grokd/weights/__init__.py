"""Checkpoint readers: Grok-1 release pickles, safetensors (HF-style ports), GGUF."""

from grokd.weights.load import load

__all__ = ["load"]
