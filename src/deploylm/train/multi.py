"""Joint fine-tuning of a multi-task encoder (tasks/multi.py): `finetune --task multi --heads DATA:TASK,...`.

Every batch holds one head's examples (a classification label and a row of token tags do not share a shape), and
its loss is that head's only. The batches are made per head (each head's examples shuffled with the seed, cut into
batch_size), then pooled: Trainer's seeded sampler shuffles the pool, so heads are drawn in proportion to their
data and every example is seen once per epoch; with --max-train-samples (per head) the heads weigh the same. This
keeps transformers' Trainer (optimiser, schedule, checkpoints, exact resume): one dataset item is a whole batch.

Trainer evaluates nothing during training (its eval loop concatenates every batch's logits, and the heads' shapes
differ); the final model is evaluated per head on its own dev split, and the mean of the heads' primary metrics is
recorded as multi:dev mean_primary."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from ..artifacts import Artifact, check_output, create_artifact
from ..config import FinetuneConfig
from ..data import load_dataset
from ..errors import ConfigError, ModelError
from ..machine import machine_info
from ..models.registry import hub_error, resolve_model
from ..tasks import get_task
from ..tasks.multi import HeadSpec, HeadTask, MultiTask, parse_heads
from .finetune import _eval_every, _prepare_checkpoints, _use_cpu, checkpoint_dir, train_subset
from .progress import LossThroughputCallback


def load_heads(cfg: FinetuneConfig) -> list[tuple[HeadSpec, object, object, object]]:
    """Every head's dataset checked and cut before any model is loaded: (head with labels, data, train, dev)."""
    if cfg.data:
        raise ConfigError("--data is not used with --task multi: each head names its dataset in --heads "
                          "(DATA:TASK, DATA an alias or NAME=DIRECTORY).")
    out = []
    for head in parse_heads(cfg.heads):
        data = load_dataset(head.data, cfg.text_column, cfg.label_column)
        if data.task != head.task:
            raise ConfigError(f"Head '{head.name}' is a {head.task} head but {data.source} holds {data.task} data. "
                              f"Write {head.data}:{data.task} or name other data.")
        train, dev = data.split(cfg.train_split), data.split(cfg.eval_split)
        if train.targets is None or dev.targets is None:
            raise ConfigError(f"Splits '{cfg.train_split}' and '{cfg.eval_split}' of {data.source} must be labelled.")
        task = get_task(head.task)
        labels = task.label_set(train.targets)
        task.check_targets(dev.targets, labels, f"Split '{cfg.eval_split}' of {data.source}")
        head = HeadSpec(head.name, head.task, head.data, tuple(labels))
        out.append((head, data, train_subset(train, cfg.max_train_samples, cfg.seed), dev.head(cfg.max_eval_samples)))
    return out


def head_batches(feats_by_head: list[list[dict]], batch_size: int, seed: int) -> list[dict]:
    """Single-head batches of every head, pooled (Trainer's sampler shuffles the pool)."""
    pool = []
    for head_id, feats in enumerate(feats_by_head):
        order = list(range(len(feats)))
        random.Random(seed + head_id).shuffle(order)
        for i in range(0, len(order), batch_size):
            pool.append({"head_id": head_id, "features": [feats[j] for j in order[i: i + batch_size]]})
    return pool


def batch_collator(collators: list):
    """Trainer hands over one pool item per step (per_device_train_batch_size 1): pad it with its head's collator."""
    import torch

    def collate(items: list[dict]) -> dict:
        (item,) = items
        batch = dict(collators[item["head_id"]](item["features"]))
        batch["head_id"] = torch.full((len(item["features"]),), item["head_id"], dtype=torch.long)
        return batch

    return collate


def _model_and_tokenizer(task: MultiTask, source):
    from transformers import AutoTokenizer

    try:
        return task.new_model(source.location), AutoTokenizer.from_pretrained(source.location)
    except OSError as exc:
        if source.is_local:
            raise ModelError(f"Could not load a model from {source.location}: {exc}") from None
        raise hub_error(source, exc) from None


def _train(cfg: FinetuneConfig, model, pool: list, collate, ckpt: Path, resume_from: bool):
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    every = _eval_every(len(pool))
    args = TrainingArguments(
        output_dir=str(ckpt), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=1, lr_scheduler_type="linear", warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, eval_strategy="no", save_strategy="steps", save_steps=every,
        save_total_limit=2, logging_steps=min(cfg.logging_steps, every), seed=cfg.seed, data_seed=cfg.seed,
        use_cpu=_use_cpu(cfg.device), report_to="none", dataloader_num_workers=0, disable_tqdm=False,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=pool, data_collator=collate,
                      callbacks=[LossThroughputCallback(samples_per_step=cfg.batch_size)])
    for cb in list(trainer.callback_handler.callbacks):
        if type(cb) is ProgressCallback:
            trainer.remove_callback(cb)
    result = trainer.train(resume_from_checkpoint=True if resume_from else None)
    return trainer, result


def finetune_multi(cfg: FinetuneConfig, output: str | Path, overwrite: bool = False, resume: bool = False) -> Artifact:
    import torch
    from transformers import set_seed

    from ..evaluation import evaluate_model

    output = Path(output)
    if not (resume and checkpoint_dir(output).exists()):
        check_output(output, overwrite)
    heads = load_heads(cfg)
    task = MultiTask([h for h, *_ in heads])
    source = resolve_model(cfg.model)
    set_seed(cfg.seed)
    model, tokenizer = _model_and_tokenizer(task, source)
    feats = [get_task(h.task).train_features(train, tokenizer, {l: i for i, l in enumerate(h.labels)}, cfg.max_length)
             for h, _, train, _ in heads]
    pool = head_batches(feats, cfg.batch_size, cfg.seed)
    collate = batch_collator([get_task(h.task).collator(tokenizer) for h, *_ in heads])

    ckpt = checkpoint_dir(output)
    resume_from = _prepare_checkpoints(ckpt, cfg, resume, overwrite)
    started = time.perf_counter()
    trainer, result = _train(cfg, model, pool, collate, ckpt, resume_from)
    seconds = time.perf_counter() - started
    model = trainer.model.to("cpu").eval()

    metrics, primaries, record = {}, {}, []
    for h, data, train, dev in heads:
        m = evaluate_model(HeadTask(h), model, tokenizer, dev, list(h.labels), cfg.max_length, cfg.eval_batch_size)
        metrics[f"{h.name}:{cfg.eval_split}"] = {**m, "samples": len(dev), "data": data.source}
        primaries[h.name] = m[get_task(h.task).primary_metric]
        record.append({"name": h.name, "task": h.task, "data": data.source, "train_samples": len(train),
                       "labels": len(h.labels), **data.info})
    metrics[f"multi:{cfg.eval_split}"] = {
        "mean_primary": round(sum(primaries.values()) / len(primaries), 6),
        "of": {h.name: get_task(h.task).primary_metric for h, *_ in heads}}
    n_train = sum(len(f) for f in feats)
    training = {
        "train_samples": n_train, "batches": len(pool), "epochs": cfg.epochs, "seconds": round(seconds, 1),
        "samples_per_second": round(n_train * cfg.epochs / max(seconds, 1e-9), 2),
        "final_train_loss": round(result.training_loss, 4), "threads": torch.get_num_threads(),
        "resumed": bool(resume_from), "device": str(trainer.args.device), "machine": machine_info(),
        "sampling": "single-head batches, pooled and shuffled (proportional to each head's data)",
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    art = create_artifact(
        output, write, stage="finetune", config=cfg.model_dump(mode="json"), parent=source.as_parent(),
        task="multi", labels=[f"{h.name}:{l}" for h, *_ in heads for l in h.labels], max_length=cfg.max_length,
        metrics=metrics, extra={"training": training, "heads": record}, overwrite=overwrite,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    return art


__all__ = ["finetune_multi", "load_heads", "head_batches"]
