"""Fine-tune an encoder with a task head.

Built on transformers' Trainer: it already does AdamW + linear warm-up/decay, evaluation and
checkpointing, best-checkpoint selection and exact resumption (optimizer, scheduler, RNG, data
order). What we add: data/label handling, a checkpoint directory beside the output so that a
killed run resumes with --resume, and the final artifact written atomically with its manifest."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from ..artifacts import Artifact, check_output, create_artifact
from ..config import FinetuneConfig
from ..data import load_dataset
from ..errors import ArtifactError, ConfigError, ModelError
from ..machine import machine_info
from ..models.registry import hub_error, resolve_model
from ..tasks import get_task
from .progress import LossThroughputCallback

MAX_STEPS_BETWEEN_CHECKPOINTS = 500


def checkpoint_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.checkpoints"


def _prepare_checkpoints(ckpt: Path, cfg: FinetuneConfig, resume: bool, overwrite: bool) -> bool:
    """Returns True when Trainer should resume from the checkpoints found in `ckpt`."""
    record = ckpt / "deploylm-config.json"
    if ckpt.exists() and not resume:
        if not overwrite:
            raise ArtifactError(
                f"An interrupted run left checkpoints in {ckpt}. Pass --resume to continue it, or --overwrite to start over."
            )
        shutil.rmtree(ckpt)
    if resume and ckpt.exists():
        saved = json.loads(record.read_text()) if record.is_file() else None
        if saved is not None and saved != cfg.model_dump(mode="json"):
            changed = sorted(k for k in saved if saved.get(k) != cfg.model_dump(mode="json").get(k))
            raise ConfigError(
                f"--resume with a different config than the interrupted run (changed: {', '.join(changed)}). "
                "Resume with the same options, or pass --overwrite to start over."
            )
        return any(ckpt.glob("checkpoint-*"))
    ckpt.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return False


def _eval_every(steps_per_epoch: int) -> int:
    """Evaluate/checkpoint at each epoch end, and more often on long epochs so a kill loses little."""
    chunks = math.ceil(steps_per_epoch / MAX_STEPS_BETWEEN_CHECKPOINTS)
    return max(1, math.ceil(steps_per_epoch / chunks))


def training_arguments(cfg, ckpt: Path, task, n_train: int, **overrides):
    """Trainer's arguments from finetune's training options (`cfg`: any config with them, e.g. DistillConfig):
    checkpoints in `ckpt`, evaluated and saved each epoch (and each MAX_STEPS_BETWEEN_CHECKPOINTS steps), the
    best checkpoint by the task's metric kept. `overrides`: other TrainingArguments fields."""
    from transformers import TrainingArguments

    every = _eval_every(math.ceil(n_train / cfg.batch_size))
    return TrainingArguments(
        output_dir=str(ckpt), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        lr_scheduler_type="linear", warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        eval_strategy="steps", save_strategy="steps", eval_steps=every, save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=task.selection_metric or task.primary_metric, greater_is_better=True,
        logging_steps=min(cfg.logging_steps, every), seed=cfg.seed, data_seed=cfg.seed, use_cpu=_use_cpu(cfg.device),
        report_to="none", dataloader_num_workers=0, disable_tqdm=False, **overrides,
    )


def use_own_progress_bar(trainer) -> None:
    """Ours (LossThroughputCallback, a subclass) draws the bar, with loss and samples/s: drop Trainer's."""
    from transformers.trainer_callback import ProgressCallback

    for cb in list(trainer.callback_handler.callbacks):
        if type(cb) is ProgressCallback:
            trainer.remove_callback(cb)


def training_record(trainer, result, train_samples: int, epochs: float, seconds: float, resumed: bool) -> dict:
    """The manifest's `training` section (shared with compress/distill.py)."""
    import torch

    return {
        "train_samples": train_samples, "epochs": epochs, "seconds": round(seconds, 1),
        "samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "final_train_loss": round(result.training_loss, 4), "best_checkpoint": trainer.state.best_model_checkpoint,
        "threads": torch.get_num_threads(), "resumed": resumed,
        "device": str(trainer.args.device), "machine": machine_info(),
    }


def finetune(cfg: FinetuneConfig, output: str | Path, overwrite: bool = False, resume: bool = False) -> Artifact:
    from transformers import AutoTokenizer, Trainer, set_seed

    if cfg.task == "multi":  # one encoder, several heads, each on its own dataset: train/multi.py
        from .multi import finetune_multi

        return finetune_multi(cfg, output, overwrite=overwrite, resume=resume)
    if cfg.heads:
        raise ConfigError("--heads is for --task multi; drop it or pass --task multi.")
    output = Path(output)
    if not (resume and checkpoint_dir(output).exists()):
        check_output(output, overwrite)
    task = get_task(cfg.task)
    source = resolve_model(cfg.model)
    data = load_dataset(cfg.data, cfg.text_column, cfg.label_column)
    if data.task != cfg.task:
        raise ConfigError(f"--task {cfg.task} does not fit {data.source}, which holds {data.task} data. "
                          f"Pass --task {data.task} or other data.")
    train = data.split(cfg.train_split)
    dev = data.split(cfg.eval_split)
    if train.targets is None or dev.targets is None:
        raise ConfigError(f"Splits '{cfg.train_split}' and '{cfg.eval_split}' of {data.source} must be labelled.")
    labels = task.label_set(train.targets)
    task.check_targets(dev.targets, labels, f"Split '{cfg.eval_split}' of {data.source}")
    train, dev = train_subset(train, cfg.max_train_samples, cfg.seed), dev.head(cfg.max_eval_samples)

    set_seed(cfg.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
        model = task.load_model(source.location, labels)
        task.prepare(tokenizer, model)  # e.g. marker tokens added to the tokenizer and the embeddings
    except OSError as exc:
        if source.is_local:
            raise ModelError(f"Could not load a model from {source.location}: {exc}") from None
        raise hub_error(source, exc) from None
    label2id = {l: i for i, l in enumerate(labels)}
    # Plain lists of feature dicts: Trainer only needs len() and indexing.
    train_ds = task.train_features(train, tokenizer, label2id, cfg.max_length)
    dev_ds = task.train_features(dev, tokenizer, label2id, cfg.max_length)

    ckpt = checkpoint_dir(output)
    resume_from = _prepare_checkpoints(ckpt, cfg, resume, overwrite)
    args = training_arguments(cfg, ckpt, task, len(train_ds))
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=task.collator(tokenizer), compute_metrics=task.trainer_metrics(dict(enumerate(labels))),
                      callbacks=[LossThroughputCallback()])
    use_own_progress_bar(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume_from else None)
    seconds = time.perf_counter() - started
    model = trainer.model.to("cpu").eval()  # evaluated and saved the way it will be served here

    from ..evaluation import evaluate_model

    metrics = evaluate_model(task, model, tokenizer, dev, labels, cfg.max_length, cfg.eval_batch_size)
    training = training_record(trainer, result, len(train_ds), cfg.epochs, seconds, bool(resume_from))

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    art = create_artifact(
        output, write, stage="finetune", config=cfg.model_dump(mode="json"), parent=source.as_parent(),
        task=cfg.task, labels=labels, max_length=cfg.max_length,
        metrics={f"{data.name}:{cfg.eval_split}": {**metrics, "samples": len(dev), "data": data.source}},
        extra={"training": training, **data.info}, overwrite=overwrite,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    return art


def _use_cpu(device: str) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA GPU. Use device: auto or cpu.")
    return device == "cpu" or not torch.cuda.is_available()


def train_subset(examples, n: int | None, seed: int):
    """A random (seeded) subset, not the first n rows: data files are often sorted by label or source."""
    if n is None or n >= len(examples):
        return examples
    import random

    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    from ..data import Examples

    return Examples([examples.inputs[i] for i in idx], [examples.targets[i] for i in idx])
