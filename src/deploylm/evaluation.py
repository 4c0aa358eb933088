"""Task metric of an artifact (any backend) on a named split, recorded in its manifest; and predict."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .artifacts import Artifact
from .config import EvalConfig
from .data import load_dataset
from .errors import ConfigError, DataError
from .tasks import task_for


def load_tokenizer(artifact: Artifact):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(artifact.path))


def evaluate_model(task, model, tokenizer, examples, labels, max_length: int, batch_size: int = 64) -> dict:
    """Metric of an in-memory torch model (used by finetune before the artifact exists)."""
    from .runtime.torch_runner import TorchRunner

    return evaluate_runner(task, TorchRunner(model, task=task), tokenizer, examples, labels, max_length, batch_size)


def evaluate_runner(task, runner, tokenizer, examples, labels, max_length: int, batch_size: int = 64,
                    show_progress: bool = True) -> dict:
    from rich.progress import Progress

    with Progress(transient=True, disable=not show_progress) as bar:
        tid = bar.add_task(f"evaluating ({runner.backend})", total=len(examples))
        preds = task.predict(runner, tokenizer, examples.inputs, labels, max_length, batch_size,
                             progress=lambda n: bar.advance(tid, n))
    return {k: round(v, 6) for k, v in task.score(preds, examples.targets).items()}


def evaluate(artifact: str | Path | Artifact, cfg: EvalConfig, runner=None) -> dict:
    from .runtime import open_runner

    art = artifact if isinstance(artifact, Artifact) else Artifact.open(artifact)
    task = task_for(art)
    data = load_dataset(cfg.data, cfg.text_column, cfg.label_column)
    if data.task != art.task:
        raise ConfigError(f"Artifact {art.path} is a {art.task} model but {data.source} holds {data.task} data.")
    examples = data.split(cfg.eval_split).head(cfg.max_eval_samples)
    if examples.targets is None:
        raise DataError(f"Split '{cfg.eval_split}' of {data.source} has no labels, so it cannot be evaluated.")
    task.check_targets(examples.targets, art.labels, f"Split '{cfg.eval_split}' of {data.source}")
    runner = runner or open_runner(art)
    metrics = evaluate_runner(task, runner, load_tokenizer(art), examples, art.labels, art.max_length, cfg.batch_size)
    record = {**metrics, "samples": len(examples), "data": data.source}
    art.update_manifest("metrics", f"{data.name}:{cfg.eval_split}", record)
    return record


def predict(artifact: str | Path | Artifact, inputs: Sequence) -> list:
    """The task's predictions for `inputs`: texts, or what the task takes ({"question", "context"} for QA)."""
    from .runtime import open_runner

    art = artifact if isinstance(artifact, Artifact) else Artifact.open(artifact)
    if not inputs:
        raise ConfigError("Give at least one text to predict (extractive QA: --question Q --context C).")
    task = task_for(art)
    return task.predict(open_runner(art), load_tokenizer(art), list(inputs), art.labels, art.max_length)
