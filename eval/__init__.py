"""MIG-Bench evaluation: generation (vLLM, transformers, OpenAI-compatible servers) kept apart from
scoring, which reproduces the Migician paper's protocol. See `python -m eval --help`."""
