"""Checkpoint readers: Grok-1 release pickles, safetensors (HF-style ports), GGUF."""
