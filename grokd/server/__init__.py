"""grokd's HTTP layer: an xAI/OpenAI-compatible API over the engine."""
