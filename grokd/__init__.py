"""grokd: a self-hosted inference engine and xAI/OpenAI-compatible API server for Grok weights.

Every part lives under this one namespace (``grokd.engine``, ``grokd.kernels``, ``grokd.server``,
``grokd.weights``, ``grokd.benchmarks``), so nothing grokd installs can shadow another
distribution's top-level package (Hugging Face's ``kernels`` among them)."""
