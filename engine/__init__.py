"""grokd's serving core: requests, scheduler, KV blocks, model runner, sampler, tokenizer."""
