"""The server's memory under batches of ever-changing shapes (what benchmarks/soak.py found growing).

Every batch the runner sees has its own (rows, tokens) shape, so its activation buffers change size on every
call. A long-running server must not keep memory per shape it has seen: once every size class has been served,
more requests of new shapes leave its resident memory where it was."""

from __future__ import annotations

import random

import psutil
import pytest
from conftest import build_tiny_artifact
from test_serve import start_server, stop_server

pytestmark = pytest.mark.timeout(240)

WORDS = "a the film plot actor scene moving dull brilliant story long boring warm tense funny music".split()
REQUESTS = 150  # per pass: enough distinct shapes that a per-shape cost adds up to many megabytes
ALLOWED_GROWTH_MB = 16  # far under what one pass grows when freed activations stay in the heap


def _batches(seed: int) -> list[list[str]]:
    """REQUESTS requests of 1..32 texts of 3..60 words: each one is a batch of a shape of its own."""
    rng = random.Random(seed)
    return [[" ".join(rng.choices(WORDS, k=rng.randint(3, 60))) for _ in range(rng.randint(1, 32))]
            for _ in range(REQUESTS)]


def _serve_all(server, batches: list[list[str]]) -> None:
    with server.client() as c:
        for texts in batches:  # one at a time: each request is one runner call of its own shape
            r = c.post("/v1/models/mid/predict", json={"inputs": texts})
            assert r.status_code == 200, r.text


def test_rss_stays_flat_across_batches_of_new_shapes(tmp_path):
    # MiniLM's widths, two layers: activations as large as the served model's, each forward quick
    art = build_tiny_artifact(tmp_path / "mid", hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                              max_length=128)
    server = start_server(tmp_path, [art.path], "--grpc-port", "-1", names=["mid"])
    try:
        proc = psutil.Process(server.proc.pid)
        _serve_all(server, _batches(seed=0))  # every size class once: first-touch pages, thread pools, caches
        before = proc.memory_info().rss
        _serve_all(server, _batches(seed=1))  # the same ranges, other shapes
        grown_mb = (proc.memory_info().rss - before) / 2**20
    finally:
        assert stop_server(server) == 0, server.log.read_text()
    assert grown_mb < ALLOWED_GROWTH_MB, f"RSS grew {grown_mb:.1f} MB over {REQUESTS} requests of new shapes"
