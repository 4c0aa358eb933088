"""Sentence embeddings/s at batch 32: sentence-transformers' own `encode` against deploylm's artifacts of the same
packaged all-MiniLM-L6-v2 (torch fp32, ONNX fp32 export, dynamic-int8), on the same texts with the same threads.

    python benchmarks/embeddings.py [--texts 872] [--rounds 5] [--threads N] [--work runs/bench/embeddings]

- texts: the first N SST-2 dev sentences at their real lengths (both sides sort by length and pad per batch).
- threads: torch.set_num_threads(N) for sentence-transformers and deploylm's torch runner, onnxruntime intra-op N
  (inter-op 1) for the ONNX runners; default: every core this process may use.
- deploylm runs through its own path: open_runner(artifact) + Task.predict (tokenise, length batches, runner,
  decode to one embedding per text), i.e. what `deploylm predict` does; sentence-transformers: encode(batch_size=32).
- rounds: one warm-up round (not counted), then R rounds; each round runs every system once over all texts, the
  order alternating (ABCD, DCBA, ...) so a neighbour's slow phase hits all of them. Median and per-round spread.
- accuracy: cosine similarity of each deploylm system's embeddings to sentence-transformers' over the same texts
  (min / mean), and the int8 gate's own figures from its manifest.

Writes benchmarks/results/embeddings.md and embeddings.json. The artifacts are built under --work (reused if there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from deploylm.machine import library_versions, machine_info  # noqa: E402


def sst2_dev(n: int) -> list[str]:
    from deploylm.data import load_dataset

    return list(load_dataset("sst2").split("dev").inputs[:n])


def build_artifacts(work: Path) -> dict:
    """minilm-l6 -> feature-extraction artifact -> ONNX export (O2) and dynamic-int8, each through its gate."""
    from deploylm.artifacts import Artifact
    from deploylm.models.embedding_import import import_embedder
    from deploylm.optimize.export_onnx import export
    from deploylm.optimize.gate import GateOptions
    from deploylm.optimize.quantize import quantize

    def made(name, make):
        path = work / name
        return Artifact.open(path) if (path / "manifest.json").is_file() else make(path)

    gate = GateOptions(allow_slower=True)  # the speed verdict is this script's job; accuracy limits stay default
    fp32 = made("fp32", lambda p: import_embedder("minilm-l6", p))
    return {"fp32": fp32, "onnx": made("onnx-O2", lambda p: export(fp32, p, gate=gate)),
            "int8": made("dynamic-int8", lambda p: quantize(fp32, p, "dynamic-int8", gate=gate))}


def systems(arts: dict, threads: int) -> dict:
    """name -> a function embedding all texts, returning [n, dim] float32."""
    import torch
    from sentence_transformers import SentenceTransformer

    from deploylm.evaluation import load_tokenizer
    from deploylm.models import resolve_model
    from deploylm.runtime import open_runner
    from deploylm.tasks import get_task

    torch.set_num_threads(threads)
    st = SentenceTransformer(resolve_model("minilm-l6").location, device="cpu")
    task = get_task("feature-extraction")
    out = {"sentence-transformers": lambda texts: st.encode(texts, batch_size=32, convert_to_numpy=True)}
    for key, label in (("fp32", "deploylm torch fp32"), ("onnx", "deploylm ONNX fp32 (O2)"),
                       ("int8", "deploylm dynamic-int8")):
        art = arts[key]
        runner, tok = open_runner(art, threads=threads), load_tokenizer(art)

        def run(texts, runner=runner, tok=tok, art=art):
            preds = task.predict(runner, tok, texts, [], art.max_length, batch_size=32)
            return np.array([p["embedding"] for p in preds], dtype=np.float32)

        out[label] = run
    return out


def measure(funcs: dict, texts: list[str], rounds: int) -> tuple[dict, dict]:
    times: dict[str, list[float]] = {k: [] for k in funcs}
    vectors: dict[str, np.ndarray] = {}
    for r in range(rounds + 1):  # round 0 warms caches and allocators; not counted
        order = list(funcs) if r % 2 == 0 else list(reversed(funcs))
        for name in order:
            t0 = time.perf_counter()
            vecs = funcs[name](texts)
            dt = time.perf_counter() - t0
            if r:
                times[name].append(dt)
            vectors[name] = vecs
        print(f"round {r}: " + ", ".join(f"{k} {len(texts) / v[-1]:.0f}/s" for k, v in times.items() if v), flush=True)
    return times, vectors


def cosine_stats(ref: np.ndarray, got: np.ndarray) -> dict:
    a, b = ref.astype(np.float64), got.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": float(cos.min()), "mean": float(cos.mean()), "max_abs_diff": float(np.abs(a - b).max())}


def report(args, texts, times, vectors, arts, elapsed) -> dict:
    n = len(texts)
    ref_name = "sentence-transformers"
    rows = {}
    for name, ts in times.items():
        rates = [n / t for t in ts]
        ratios = [tr / t for tr, t in zip(times[ref_name], ts)]  # same round: speed relative to the peer
        rows[name] = {"per_s_median": statistics.median(rates), "per_s_rounds": rates,
                      "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                      "vs_sentence_transformers": cosine_stats(vectors[ref_name], vectors[name])}
    int8_vs_fp32 = cosine_stats(vectors["deploylm torch fp32"], vectors["deploylm dynamic-int8"])
    return {"command": " ".join(["python", "benchmarks/embeddings.py"] + sys.argv[1:]), "texts": n,
            "rounds": args.rounds, "threads": args.threads, "batch_size": 32, "elapsed_s": elapsed,
            "machine": {**machine_info(), "loadavg": os.getloadavg()}, "versions": library_versions(),
            "sentence_transformers": _st_version(), "systems": rows, "int8_vs_fp32": int8_vs_fp32,
            "int8_gate": arts["int8"].manifest["gate"]["cosine"],
            "int8_gate_speed": arts["int8"].manifest["gate"]["speed"]}


def _st_version() -> str:
    from importlib import metadata

    return metadata.version("sentence-transformers")


def markdown(res: dict) -> str:
    m, g = res["machine"], res["int8_gate"]
    lines = [
        "## Sentence embeddings: sentence-transformers vs deploylm (all-MiniLM-L6-v2)\n",
        f"Command: `{res['command']}` ({res['elapsed_s'] / 60:.1f} min). Machine: {m['cpu']}, {m['cores']} cores "
        f"({m['simd']}), {m['memory_gb']} GB; load average at the end {m['loadavg'][0]:.1f}. Versions: "
        f"sentence-transformers {res['sentence_transformers']}, torch {res['versions']['torch']}, onnxruntime "
        f"{res['versions']['onnxruntime']}.\n",
        f"Texts: the first {res['texts']} SST-2 dev sentences at real lengths, batch {res['batch_size']}. Threads: "
        f"torch.set_num_threads({res['threads']}) and onnxruntime intra-op {res['threads']} for every system. "
        f"{res['rounds']} counted rounds after one warm-up, order alternating each round; ratio = that round's "
        "sentence-transformers time / the system's time. deploylm goes through open_runner + Task.predict "
        "(tokenisation and decoding to one embedding list per text included); sentence-transformers through "
        "`encode(batch_size=32)` (numpy out).\n",
        f"{_load_note(m)}\n",
        "| system | embeddings/s (median) | per round | × sentence-transformers (median, min..max) | "
        "cosine to sentence-transformers min / mean | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in res["systems"].items():
        c = r["vs_sentence_transformers"]
        lines.append(f"| {name} | {r['per_s_median']:.1f} | {' '.join(f'{x:.0f}' for x in r['per_s_rounds'])} | "
                     f"{r['ratio_median']:.2f} ({r['ratio_min']:.2f}..{r['ratio_max']:.2f}) | "
                     f"{c['min']:.6f} / {c['mean']:.6f} | {c['max_abs_diff']:.2g} |")
    c = res["int8_vs_fp32"]
    lines += [
        "",
        f"dynamic-int8 vs deploylm fp32 on these {res['texts']} texts: cosine min {c['min']:.4f}, "
        f"mean {c['mean']:.4f}. "
        f"Its quantize gate (all {g['texts']} SST-2 dev texts, recorded in the manifest): min {g['min']:.4f}, mean "
        f"{g['mean']:.4f}, 1st percentile {g['p01']:.4f} (limits: --min-cosine {g['min_allowed']:g}, "
        f"--min-cosine-mean {g['mean_allowed']:g}); worst text: {g['worst_text']!r}.",
        "",
    ]
    return "\n".join(lines)


def _load_note(m: dict) -> str:
    if m["loadavg"][0] <= m["cores"]:
        return "The host was not oversubscribed during the run (load average at most its core count)."
    return (f"Load average {m['loadavg'][0]:.1f} on {m['cores']} cores: neighbours took CPU during the run, so the "
            "absolute rates are low; the same-round ratios are the comparison.")


def main() -> int:
    from deploylm import settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=872)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=settings.num_threads())
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "embeddings")
    args = ap.parse_args()
    if args.rounds < 5:
        ap.error("--rounds must be at least 5 (a per-round spread needs rounds)")
    t0 = time.perf_counter()
    arts = build_artifacts(args.work)
    texts = sst2_dev(args.texts)
    times, vectors = measure(systems(arts, args.threads), texts, args.rounds)
    res = report(args, texts, times, vectors, arts, time.perf_counter() - t0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embeddings.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "embeddings.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
