"""Extractive QA benchmark: SQuAD v1.1 EM/F1 of MiniLM-L6 trained on 24 articles, fp32 and dynamic int8.

    DEPLOYLM_DATA_DIR=../shared/data python benchmarks/qa.py    # (or: SECTIONS=qa make bench)
    REUSE=1 ...                                                   # re-read the artifacts already in runs/bench

The shared SQuAD copy is its dev file only (48 articles): deploylm splits it by article (seeded; the titles are
in the artifact's manifest) into 24 train, 4 dev (checkpoint selection) and 20 held-out test articles. The
model is trained on the train articles, the int8 variant is made by `deploylm quantize` behind its gate (dev
split), and both are scored on the test articles with deploylm's evaluation path. Writes
benchmarks/results/qa.md and qa.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deploylm.artifacts import Artifact  # noqa: E402
from deploylm.config import EvalConfig, FinetuneConfig  # noqa: E402
from deploylm.evaluation import evaluate  # noqa: E402
from deploylm.machine import machine_info  # noqa: E402

RUNS = Path(os.environ.get("BENCH_RUNS", ROOT / "runs" / "bench"))
REUSE = os.environ.get("REUSE") == "1"
RESULTS = ROOT / "benchmarks" / "results"
# One epoch at 192 tokens: what fits the 2-core budget (about 1.5 h here while the machine is shared).
TRAIN = FinetuneConfig(model="minilm-l6", task="extractive-qa", data="squad_v1.1", epochs=1, max_length=192,
                       learning_rate=1e-4, batch_size=32)
TRAIN_CMD = ("deploylm finetune --model minilm-l6 --task extractive-qa --data squad_v1.1 --epochs 1 "
             "--max-length 192 --learning-rate 1e-4 --output runs/bench/squad-minilm")
QUANT_CMD = "deploylm quantize runs/bench/squad-minilm --method dynamic-int8 --output runs/bench/squad-minilm-int8"


def trained() -> Artifact:
    from deploylm.train.finetune import finetune

    out = RUNS / "squad-minilm"
    if REUSE and (out / "manifest.json").is_file():
        return Artifact.open(out)
    return finetune(TRAIN, out, overwrite=True)


def quantized(parent: Artifact) -> Artifact:
    from deploylm.optimize.quantize import quantize

    out = RUNS / "squad-minilm-int8"
    if REUSE and (out / "manifest.json").is_file():
        return Artifact.open(out)
    return quantize(parent, out, "dynamic-int8", overwrite=True)


def test_scores(art: Artifact) -> tuple[dict, float]:
    started = time.perf_counter()
    rec = evaluate(art, EvalConfig(data="squad_v1.1", eval_split="test", batch_size=32))
    return rec, time.perf_counter() - started


def int8_line(int8: Artifact | None, refused: str | None) -> str:
    if int8 is None:
        return f"The dynamic int8 variant was refused by `deploylm quantize`: {refused}"
    parity, gate = int8.manifest["parity"], int8.manifest["gate"]
    agree = min(parity["random"]["argmax_agreement"], parity["real"]["argmax_agreement"])
    speed = gate["speed"]
    return (f"int8 parity (both heads, against the fp32 parent): max |Δ logit| random "
            f"{parity['random']['max_abs_diff']:.3f} / real {parity['real']['max_abs_diff']:.3f}, start/end argmax "
            f"agreement {100 * agree:.1f} %; gate on the dev articles: F1 {100 * gate['parent']['f1']:.2f} -> "
            f"{100 * gate['variant']['f1']:.2f}, speed {gate['speed_ratio']:.2f}x its parent at batch "
            f"{speed['batch_size']} (median of {speed['rounds']} rounds, {speed['ratio_min']:.2f}.."
            f"{speed['ratio_max']:.2f}).")


def main() -> None:
    from deploylm.errors import GateError, ParityError

    fp32 = trained()
    try:
        int8, refused = quantized(fp32), None
    except (GateError, ParityError) as exc:  # a refusal is a result: reported, not hidden
        int8, refused = None, str(exc)
    variants = [("fp32 (torch)", fp32)] + ([("dynamic int8 (onnxruntime)", int8)] if int8 else [])
    scores = {name: test_scores(art) for name, art in variants}
    split = fp32.manifest["data_split"]
    training = fp32.manifest["training"]
    dev = next(iter(fp32.metrics.values()))
    machine = machine_info()
    lines = [
        "## Extractive question answering (issue 11)\n",
        f"Command: `DEPLOYLM_DATA_DIR=../shared/data python benchmarks/qa.py` (runs `{TRAIN_CMD}`, then "
        f"`{QUANT_CMD}`, then `deploylm eval ART --data squad_v1.1 --split test` on both).",
        f"Machine: {machine['cpu']} ({machine['simd']}), {machine['cores']} cores; training on "
        f"{training['device']}, {training['threads']} threads.\n",
        f"Data: SQuAD v1.1 dev file only, split by article with seed {split['seed']}: "
        f"{len(split['train_articles'])} train articles ({training['train_samples']:,} windows), "
        f"{len(split['dev_articles'])} dev (checkpoint selection; dev F1 {100 * dev['f1']:.2f} on {dev['samples']} "
        f"questions), {len(split['test_articles'])} held-out test articles (below). Article titles are in the "
        "artifact's manifest (`data_split`).\n",
        "| variant | test EM | test F1 | questions | eval time |",
        "|---|---|---|---|---|",
    ]
    for name, (rec, seconds) in scores.items():
        lines.append(f"| {name} | {100 * rec['exact_match']:.2f} | {100 * rec['f1']:.2f} | {rec['samples']:,} | "
                     f"{seconds / 60:.1f} min |")
    lines += [
        "",
        f"Training: {training['epochs']:g} epoch, {training['seconds'] / 60:.0f} min, "
        f"{training['samples_per_second']:.1f} windows/s, max length {fp32.max_length} (windows overlap "
        "a quarter), lr 1e-4.",
        int8_line(int8, refused),
        "",
        "Published reference (not measured here): DistilBERT 86.9 F1 and BERT-base 88.5 F1 on SQuAD v1.1 dev, trained "
        "on the full train set (87,599 questions, 442 articles) for 2-3 epochs at 384 tokens. The model here saw "
        f"{training['train_samples']:,} windows from 24 articles for one epoch: the gap is mostly data and training "
        "budget, not the method.",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "qa.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "qa.json").write_text(json.dumps({"scores": {k: v[0] for k, v in scores.items()},
                                                 "eval_seconds": {k: round(v[1], 1) for k, v in scores.items()},
                                                 "training": training, "int8_refused": refused,
                                                 "parity": int8.manifest["parity"] if int8 else None,
                                                 "gate": int8.manifest["gate"] if int8 else None,
                                                 "machine": machine}, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
