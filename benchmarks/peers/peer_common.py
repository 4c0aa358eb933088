"""What every generation peer shares, standard library only: each peer runs in its own interpreter (the
llama.cpp one in its own venv, without deploylm), reads the same prompt file and prints one JSON document
of the same shape, so `deploylm.bench.generate_peers` can parse and summarise any of them alike.

Timing model, the same for every peer: a round runs the prompts as `concurrency` closed-loop clients (a
client sends its next prompt when its previous one is done). A request's clock starts when it is
handed to the system; `token_times_s[i]` is when token i+1 was known, on that clock, so token_times_s[0]
is the time to first token."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from pathlib import Path

SCHEMA = "deploylm.generate-peer/1"


def read_prompts(path: str) -> list[str]:
    """JSONL: one {"text": ...} object (or a bare JSON string) per line; each system tokenizes itself."""
    prompts = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        text = item if isinstance(item, str) else item.get("text")
        if not isinstance(text, str) or not text:
            raise SystemExit(f"{path}:{n}: expected a JSON string or an object with a non-empty 'text'")
        prompts.append(text)
    if not prompts:
        raise SystemExit(f"{path}: no prompts")
    return prompts


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux: the process's high-water mark, model load included.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def request_record(index: int, prompt_tokens: int, start_s: float, token_times_s: list[float],
                   tokens: list[int]) -> dict:
    """start_s: when the request was handed over, seconds after the round began."""
    return {"prompt_index": index, "prompt_tokens": prompt_tokens, "output_tokens": len(tokens),
            "start_s": round(start_s, 6), "ttft_s": round(token_times_s[0], 6) if token_times_s else None,
            "token_times_s": [round(t, 6) for t in token_times_s], "tokens": tokens}


def round_record(wall_s: float, requests: list[dict]) -> dict:
    generated = sum(r["output_tokens"] for r in requests)
    return {"wall_s": round(wall_s, 6), "output_tokens": generated,
            "aggregate_tokens_per_s": round(generated / wall_s, 3) if wall_s > 0 else None,
            "requests": sorted(requests, key=lambda r: r["prompt_index"])}


def document(peer: str, mode: str, *, model: str, threads: int, concurrency: int, max_tokens: int,
             load_s: float, rounds: list[dict], weight_bytes: int, settings: dict, versions: dict) -> dict:
    return {"schema": SCHEMA, "peer": peer, "mode": mode, "model": model, "threads": threads,
            "concurrency": concurrency, "max_tokens": max_tokens, "load_s": round(load_s, 3),
            "weight_bytes": weight_bytes, "settings": settings, "rounds": rounds,
            "peak_rss_mb": peak_rss_mb(), "python": platform.python_version(), "versions": versions}


def emit(doc: dict) -> None:
    """The document is the last line of stdout, so libraries that print to stdout cannot break parsing."""
    sys.stdout.write("\n" + json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def now() -> float:
    return time.perf_counter()
