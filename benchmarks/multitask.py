"""One multi-task MiniLM (SST-2 sentiment + AG News topic + CoNLL-2003 entities, trained jointly) against three
single-task MiniLMs trained on the same per-head sample budget: each head's dev metric, and the latency of one
multi-head forward against the three single-task forwards it replaces.

    DEPLOYLM_DATA_DIR=/work/shared/data python benchmarks/multitask.py [--samples 2000] [--epochs 1]
        [--rounds 7] [--threads N] [--work runs/bench/multitask]

- training: finetune (deploylm's own path) with model minilm-l6, max_length 128, batch 32, lr 5e-5, seed 42, the
  same --max-train-samples per head for the multi model and per single-task model. AG News has only test.csv
  here: deploylm splits it seeded into train 6,000 / dev 1,600 (recorded in each manifest), the same for both.
- metric: each head on its full dev split (SST-2 dev 872, AG News held-out 1,600, CoNLL eng.testa 3,250) as
  finetune records it in the manifest (accuracy; entity F1 for CoNLL).
- latency: torch fp32 runners (open_runner), the same threads; batch 1 (one SST-2 dev sentence) and batch 32 (32
  SST-2 dev sentences padded to the longest). Per round: the multi forward and the three single forwards, N
  calls each, the order alternating per round (ABAB / BABA); median over rounds and per-round spread.

Writes benchmarks/results/multitask.md and multitask.json. Artifacts are built under --work (reused if there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from deploylm.machine import library_versions, machine_info  # noqa: E402

HEADS = [("sst2", "classification", "accuracy"), ("ag_news", "classification", "accuracy"),
         ("conll2003", "token-classification", "f1")]
COMMON = dict(model="minilm-l6", epochs=1.0, batch_size=32, max_length=128, learning_rate=5e-5, seed=42)


def train_all(work: Path, samples: int, epochs: float) -> dict:
    from deploylm.artifacts import Artifact
    from deploylm.config import FinetuneConfig
    from deploylm.train.finetune import finetune

    def made(name, cfg):
        path = work / name
        if (path / "manifest.json").is_file():
            return Artifact.open(path)
        t0 = time.perf_counter()
        art = finetune(cfg, path)
        print(f"trained {name} in {time.perf_counter() - t0:.0f}s", flush=True)
        return art

    common = {**COMMON, "epochs": epochs, "max_train_samples": samples}
    arts = {"multi": made("multi", FinetuneConfig(task="multi", heads=",".join(f"{n}:{t}" for n, t, _ in HEADS),
                                                  **common))}
    for name, task, _ in HEADS:
        arts[name] = made(name, FinetuneConfig(task=task, data=name, **common))
    return arts


def forwards(arts: dict, threads: int):
    from deploylm.data import load_dataset
    from deploylm.evaluation import load_tokenizer
    from deploylm.runtime import open_runner
    from deploylm.runtime.batching import pad_batch
    from deploylm.tasks import task_for

    texts = list(load_dataset("sst2").split("dev").inputs[:32])
    tok = load_tokenizer(arts["multi"])
    runners = {k: open_runner(a, threads=threads) for k, a in arts.items()}
    feats, _ = task_for(arts["multi"]).encode(texts, tok, 128)
    names = runners["multi"].input_names
    return runners, {1: pad_batch(feats[:1], tok.pad_token_id, names), 32: pad_batch(feats, tok.pad_token_id, names)}


def latency(runners: dict, batches: dict, rounds: int) -> dict:
    """Seconds per call of the multi forward and of the three single-task forwards together, per batch size."""
    singles = [n for n, _, _ in HEADS]
    calls = {1: 20, 32: 3}
    out = {}
    for bs, batch in batches.items():
        t = {"multi": [], "three singles": []}
        for r in range(rounds + 1):  # round 0 warms up, not counted
            order = ["multi", "three singles"] if r % 2 == 0 else ["three singles", "multi"]
            for key in order:
                t0 = time.perf_counter()
                for _ in range(calls[bs]):
                    for name in (["multi"] if key == "multi" else singles):
                        runners[name].run(batch)
                if r:
                    t[key].append((time.perf_counter() - t0) / calls[bs])
        out[bs] = {k: {"median_ms": round(1000 * statistics.median(v), 2), "min_ms": round(1000 * min(v), 2),
                       "max_ms": round(1000 * max(v), 2)} for k, v in t.items()}
        ratios = [s / m for s, m in zip(t["three singles"], t["multi"])]
        out[bs]["speedup"] = {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                              "max": round(max(ratios), 2)}
        out[bs]["seq_len"] = int(batch["input_ids"].shape[1])
    return out


def metrics(arts: dict) -> dict:
    rows = {}
    for name, _, metric in HEADS:
        multi = arts["multi"].manifest["metrics"][f"{name}:dev"]
        single = next(v for k, v in arts[name].manifest["metrics"].items() if k.endswith(":dev"))
        rows[name] = {"metric": metric, "multi": multi[metric], "single": single[metric], "samples": multi["samples"],
                      "multi_macro_f1": multi.get("macro_f1")}
    return rows


def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "multitask.json").write_text(json.dumps(result, indent=2) + "\n")
    m, lat, cfg = result["metrics"], result["latency"], result["config"]
    lines = ["## Multi-task encoder: one MiniLM, three heads, vs three single-task MiniLMs\n",
             f"`python benchmarks/multitask.py` — minilm-l6, {cfg['samples']} training samples per head, "
             f"{cfg['epochs']:g} epoch, max_length 128, batch 32, lr 5e-5, seed 42; the multi model trains on "
             "single-head batches drawn in proportion (equal here). AG News: the seeded 6,000 / 1,600 split of its "
             f"test.csv. {cfg['threads']} threads, torch fp32. Training time: multi {cfg['train_seconds']['multi']} s, "
             f"single-task {', '.join(f'{k} {v} s' for k, v in cfg['train_seconds'].items() if k != 'multi')}.\n",
             "| head | dev set (rows) | metric | multi-task | single-task | delta (points) |", "|---|---|---|---|---|---|"]
    for name, r in m.items():
        lines.append(f"| {name} | {r['samples']} | {r['metric']} | {r['multi']:.4f} | {r['single']:.4f} | "
                     f"{100 * (r['multi'] - r['single']):+.2f} |")
    lines += ["\nA small budget (the whole script fits in about 20 minutes of 2 cores): every model is under-trained, so the "
              "deltas say how joint training compares at this budget, not at convergence. The multi model takes as many "
              "steps per head as each single model, but its linear schedule spans all heads' steps.",
              f"\nMean of the heads' primary metrics (the multi model's `multi:dev mean_primary`): "
              f"{result['mean_primary']:.4f}.\n",
              f"Latency of one multi-head forward vs the three single-task forwards it replaces ({cfg['rounds']} "
              "interleaved rounds; median, and min..max over rounds):\n",
              "| batch | tokens | multi forward (ms) | three single forwards (ms) | speed-up |", "|---|---|---|---|---|"]
    for bs, r in lat.items():
        mu, th, s = r["multi"], r["three singles"], r["speedup"]
        lines.append(f"| {bs} | {r['seq_len']} | {mu['median_ms']} ({mu['min_ms']}..{mu['max_ms']}) | "
                     f"{th['median_ms']} ({th['min_ms']}..{th['max_ms']}) | {s['median']}x ({s['min']}..{s['max']}) |")
    lines.append(f"\nMachine: {result['machine'].get('cpu', result['machine'])}; torch {result['versions'].get('torch')}.")
    (RESULTS / "multitask.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "multitask")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    arts = train_all(a.work, a.samples, a.epochs)
    runners, batches = forwards(arts, a.threads)
    lat = latency(runners, batches, a.rounds)
    result = {"config": {"samples": a.samples, "epochs": a.epochs, "rounds": a.rounds, "threads": a.threads,
                         "train_seconds": {k: v.manifest["training"]["seconds"] for k, v in arts.items()}},
              "metrics": metrics(arts), "mean_primary": arts["multi"].manifest["metrics"]["multi:dev"]["mean_primary"],
              "latency": lat, "heads": arts["multi"].manifest["heads"], "machine": machine_info(),
              "versions": library_versions()}
    write(result)
    print((RESULTS / "multitask.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
