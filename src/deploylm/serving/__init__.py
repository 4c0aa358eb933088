"""Serving: one Engine per server (queue + dynamic batcher per model) behind REST (FastAPI) and gRPC
(Open Inference Protocol v2). `deploylm serve` / `deploylm bench-serve` live in serving/cli.py.
Nothing heavy is imported here: `import deploylm.serving` stays free."""
