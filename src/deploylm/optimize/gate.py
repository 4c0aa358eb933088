"""The gate every variant passes before it becomes an artifact: parity with its parent, the task
metric on the dev set (variant and parent, same examples), and speed against the parent measured
side by side on this machine (interleaved rounds, because neighbours cause slow phases).

The variant is built in a staging directory next to the output; only when it passes is it written
as an artifact (create_artifact: temp dir + atomic rename). A refused variant leaves nothing behind.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import MANIFEST, Artifact, check_output, clear_leftovers, create_artifact, work_dir
from ..errors import ConfigError, GateError
from .common import task_data
from .embedding_gate import DEFAULT_MIN_COSINE, DEFAULT_MIN_COSINE_MEAN, check_thresholds
from .speed_verdict import summarise


@dataclass(frozen=True)
class GateOptions:
    data: str | None = None  # dataset; default: the one in the parent's lineage
    split: str = "dev"
    max_metric_drop: float = 1.0  # points of the task's primary metric
    allow_metric_drop: bool = False
    allow_slower: bool = False
    max_eval_samples: int | None = None
    bench_samples: int = 256
    rounds: int = 5
    batch_size: int = 32
    # sentence embeddings (quantize): cosine similarity to the parent over the corpus (embedding_gate.py)
    min_cosine: float = DEFAULT_MIN_COSINE
    min_cosine_mean: float = DEFAULT_MIN_COSINE_MEAN

    def __post_init__(self):
        if self.max_metric_drop < 0:
            raise ConfigError(f"--max-metric-drop must be >= 0 points, not {self.max_metric_drop}.")
        check_thresholds(self.min_cosine, self.min_cosine_mean)
        if self.rounds < 1 or self.batch_size < 1 or self.bench_samples < 1:
            raise ConfigError("Gate rounds, batch size and bench samples must be positive.")


def open_dir_runner(path: Path, fmt: str, task: str, dtype: str | None = None):
    """A runner on a directory that is not (yet) an artifact: the staging copy of a variant."""
    if fmt == "onnx":
        from ..runtime.ort_runner import OrtRunner

        return OrtRunner(path / "model.onnx")
    from ..runtime.torch_runner import TorchRunner
    from ..tasks import get_task

    t = get_task(task).configured(path)
    return TorchRunner(t.load_model(str(path)), dtype=dtype, task=t)


def measure_speed(runners: dict, batches: list[dict], rounds: int, times_out: dict | None = None) -> dict:
    """Sequences/s of each runner over the same padded batches; rounds alternate the order (ABBA).
    times_out, if given, receives each runner's seconds per counted round."""
    n_seq = sum(len(b["input_ids"]) for b in batches)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds + 1):  # round 0 warms caches and allocators; not counted
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for key in order:
            runner = runners[key]
            feeds = [{k: v for k, v in b.items() if k in runner.input_names} for b in batches]
            t0 = time.perf_counter()
            for f in feeds:
                runner.run(f)
            if r:
                times[key].append(time.perf_counter() - t0)
    if times_out is not None:
        times_out.update(times)
    return {k: round(n_seq / statistics.median(v), 2) for k, v in times.items()}


def has_dev_metric(task_name: str) -> bool:
    """Whether the task has a dev-set metric to gate on; sentence embeddings have none (parity and speed only)."""
    from ..tasks import get_task

    return get_task(task_name).primary_metric is not None


def _no_metric_record(gate: GateOptions) -> tuple[dict, list[str]]:
    """The gate record of a task without a dev metric, and the texts its speed is measured on: the parity
    check's real texts, repeated up to bench_samples (there is no dataset in such an artifact's lineage)."""
    from .verify import REAL_TEXTS

    texts = (REAL_TEXTS * (gate.bench_samples // len(REAL_TEXTS) + 1))[: gate.bench_samples]
    record = {"data": None, "split": None, "samples": 0, "metric": None, "parent": {}, "variant": {},
              "metric_delta_points": 0.0, "dataset_name": None}
    return record, texts


def _dev_metric_record(task, parent: Artifact, parent_runner, variant_runner, tokenizer,
                       gate: GateOptions) -> tuple[dict, list]:
    from ..data import load_dataset
    from ..evaluation import evaluate_runner

    data = load_dataset(task_data(parent, gate.data))
    if data.task != parent.task:
        raise ConfigError(f"{data.source} holds {data.task} data but {parent.path} is a {parent.task} model.")
    examples = data.split(gate.split).head(gate.max_eval_samples)
    task.check_targets(examples.targets, parent.labels, f"Split '{gate.split}' of {data.source}")
    args = (tokenizer, examples, parent.labels, parent.max_length, gate.batch_size)
    before = evaluate_runner(task, parent_runner, *args, show_progress=False)
    after = evaluate_runner(task, variant_runner, *args, show_progress=False)
    metric = task.primary_metric
    record = {"data": data.source, "split": gate.split, "samples": len(examples), "metric": metric,
              "parent": before, "variant": after, "metric_delta_points": round(100 * (after[metric] - before[metric]), 3),
              "dataset_name": data.name}
    return record, list(examples.inputs[: gate.bench_samples])


def _eval_and_bench(parent: Artifact, parent_runner, variant_runner, tokenizer, gate: GateOptions,
                    cosine_gate: bool = False) -> dict:
    from ..runtime.batching import length_batches, pad_batch
    from ..tasks import task_for
    from .embedding_gate import cosine_record

    task = task_for(parent)
    if cosine_gate:
        record, bench_inputs = cosine_record(parent, parent_runner, variant_runner, tokenizer, gate)
    elif task.primary_metric is None:
        record, bench_inputs = _no_metric_record(gate)
    else:
        record, bench_inputs = _dev_metric_record(task, parent, parent_runner, variant_runner, tokenizer, gate)
    feats, _ = task.encode(bench_inputs, tokenizer, parent.max_length)
    names = tuple(dict.fromkeys(parent_runner.input_names + variant_runner.input_names))
    batches = [pad_batch([feats[i] for i in idx], tokenizer.pad_token_id or 0, names)
               for idx in length_batches(feats, gate.batch_size)]
    times: dict[str, list[float]] = {}
    speed = measure_speed({"parent": parent_runner, "variant": variant_runner}, batches, gate.rounds, times)
    verdict = summarise([p / v for p, v in zip(times["parent"], times["variant"])])  # seconds: parent / variant
    return {
        **record,
        "speed": {"batch_size": gate.batch_size, "samples": len(feats), "parent_seq_per_s": speed["parent"],
                  "variant_seq_per_s": speed["variant"], "threads": parent_runner.threads,
                  **verdict},
        "speed_ratio": verdict["ratio_median"],
    }


def judge(record: dict, gate: GateOptions, what: str) -> None:
    """Raise GateError when the variant is less accurate or slower than allowed."""
    from .embedding_gate import cosine_problems

    drop = -record["metric_delta_points"]
    problems = cosine_problems(record, gate)
    if record["metric"] is not None and drop > gate.max_metric_drop and not gate.allow_metric_drop:
        problems.append(f"{record['metric']} dropped {drop:.2f} points ({record['parent'][record['metric']]:.4f} -> "
                        f"{record['variant'][record['metric']]:.4f} on {record['samples']} {record['split']} examples), "
                        f"more than --max-metric-drop {gate.max_metric_drop:g}")
    s = record["speed"]
    if s["slower"] and not gate.allow_slower:
        problems.append(f"it is slower than its parent in every one of {s['rounds']} rounds ({s['variant_seq_per_s']} "
                        f"vs {s['parent_seq_per_s']} seq/s at batch {s['batch_size']}, ratio {s['ratio_min']:.2f}.."
                        f"{s['ratio_max']:.2f}x)")
    if problems:
        keep = "lower --min-cosine / --min-cosine-mean" if "cosine" in record else "--allow-metric-drop"
        raise GateError(f"Refused {what}: {'; and '.join(problems)}. No artifact was written. Pass "
                        f"{keep} / --allow-slower to keep it anyway, or try another method.")


PARITY_EXAMPLES = 32


def _parity_texts(parent: Artifact, gate: GateOptions) -> list[str]:
    """The task's own extra parity texts, made from the gate split's first examples when the task has a dev
    metric (in-distribution inputs: where a trained model decides, so agreement has something to judge)."""
    from ..data import load_dataset
    from ..tasks import task_for

    task = task_for(parent)
    examples = None
    if task.primary_metric is not None:
        splits = load_dataset(task_data(parent, gate.data)).splits
        examples = splits[gate.split].inputs[:PARITY_EXAMPLES] if gate.split in splits else None
    return task.parity_texts(examples)


def build_gated_variant(parent: Artifact, output, write_files: Callable[[Path], dict], *, stage: str, fmt: str,
                        method: str, config: dict, gate: GateOptions, parity_tolerance: float | None = None,
                        dtype: str | None = None, overwrite: bool = False, cosine_gate: bool = False) -> Artifact:
    """Build -> parity check -> gate -> artifact. Nothing is left at `output` unless all pass.
    cosine_gate: a sentence-embedding variant, judged by cosine similarity to its parent (embedding_gate.py)."""
    from ..evaluation import load_tokenizer
    from ..runtime import open_runner
    from .embedding_gate import corpus, cosine_metrics, embedding_parity
    from .verify import check_parity

    out = check_output(output, overwrite)
    if has_dev_metric(parent.task):
        task_data(parent, gate.data)  # fail on a missing dataset before minutes of export work
    elif cosine_gate:
        corpus(gate.data, gate.split, gate.max_eval_samples)
    clear_leftovers(out)
    staging = work_dir(out, "staging")
    staging.mkdir(parents=True)
    try:
        info = write_files(staging) or {}
        variant_runner = open_dir_runner(staging, fmt, parent.task, dtype)
        parent_runner = open_runner(parent)
        tokenizer = load_tokenizer(parent)
        vocab = int(getattr(tokenizer, "vocab_size", 0) or len(tokenizer))
        if cosine_gate:
            parity = embedding_parity(parent_runner, variant_runner, tokenizer, method, parent.max_length, vocab,
                                      tolerance=parity_tolerance)
        else:
            parity = check_parity(parent_runner, variant_runner, tokenizer, method, parent.max_length, vocab,
                                  texts=_parity_texts(parent, gate), tolerance=parity_tolerance)
        record = _eval_and_bench(parent, parent_runner, variant_runner, tokenizer, gate, cosine_gate)
        judge(record, gate, f"the {method} variant of {parent.path}")
        metrics = cosine_metrics(record) if cosine_gate else {} if record["metric"] is None else {
            f"{record['dataset_name']}:{record['split']}": {**record["variant"], "samples": record["samples"],
                                                           "data": record["data"]}}
        record.pop("dataset_name")

        def copy_staged(tmp: Path) -> None:
            for item in staging.iterdir():
                if item.name != MANIFEST:
                    shutil.copy2(item, tmp / item.name)

        extra = {"method": method, "optimization": info, "parity": parity, "gate": record,
                 "gate_options": asdict(gate)}
        if dtype:
            extra["dtype"] = dtype
        return create_artifact(out, copy_staged, stage=stage, config=config,
                               parent=parent.as_parent(), task=parent.task, labels=parent.labels,
                               max_length=parent.max_length, fmt=fmt, metrics=metrics, extra=extra,
                               overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
