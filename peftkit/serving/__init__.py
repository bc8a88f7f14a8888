"""Use what you trained: one base in memory with the adapters of many runs over it (pool), a worker that answers
generation jobs in mixed-adapter batches (batcher), the OpenAI-compatible HTTP API (protocol, app, server) and the
terminal chat (chat). Prompts are rendered with each run's own chat template and stop tokens, and greedy answers
equal `peftkit eval`'s generations."""
