"""Recovery fine-tuning of a pruned model: transformers' Trainer as finetune runs it (checkpoints beside the
output for --resume, evaluation and best-checkpoint selection), or compress/kd.py's DistillationTrainer with the
unpruned parent as teacher (--distill-from-parent)."""

from __future__ import annotations

import math
import time

from ..machine import machine_info
from ..train.finetune import _eval_every, _prepare_checkpoints, _use_cpu, checkpoint_dir


def keep_zeros_callback(model):
    """A TrainerCallback that re-applies the zeros of unstructured pruning after every optimiser step, so that
    recovery cannot grow back the weights that were pruned."""
    from transformers import TrainerCallback

    from .unstructured import encoder_linears

    masks = [(m, m.weight.detach() != 0) for _, m in encoder_linears(model)]

    class KeepZeros(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            import torch

            with torch.no_grad():
                for m, keep in masks:
                    m.weight.mul_(keep.to(m.weight.device))

    return KeepZeros()


def recover(model, cfg, task, train_ds: list, dev_ds: list, tokenizer, labels: list[str], output, *,
            teacher=None, resume: bool = False, overwrite: bool = False, callbacks=()) -> tuple:
    """(the recovered model on CPU in eval mode, a training record for the manifest)."""
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    from ..train.progress import LossThroughputCallback
    from .kd import DistillationTrainer

    ckpt = checkpoint_dir(output)
    resume_from = _prepare_checkpoints(ckpt, cfg, resume, overwrite)
    every = _eval_every(math.ceil(len(train_ds) / cfg.batch_size))
    args = TrainingArguments(
        output_dir=str(ckpt), num_train_epochs=cfg.recover_epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        lr_scheduler_type="linear", warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        eval_strategy="steps", save_strategy="steps", eval_steps=every, save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=task.selection_metric or task.primary_metric,
        greater_is_better=True, logging_steps=min(cfg.logging_steps, every), seed=cfg.seed, data_seed=cfg.seed,
        use_cpu=_use_cpu(cfg.device), report_to="none", dataloader_num_workers=0, disable_tqdm=False,
    )
    common = dict(model=model.train(), args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                  data_collator=task.collator(tokenizer), compute_metrics=task.trainer_metrics(dict(enumerate(labels))),
                  callbacks=[LossThroughputCallback(), *callbacks])
    if teacher is not None:
        trainer = DistillationTrainer(**common, teacher=teacher, temperature=cfg.temperature, alpha=cfg.alpha)
    else:
        trainer = Trainer(**common)
    for cb in list(trainer.callback_handler.callbacks):  # ours draws the bar (as finetune does)
        if type(cb) is ProgressCallback:
            trainer.remove_callback(cb)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume_from else None)
    record = {
        "train_samples": len(train_ds), "epochs": cfg.recover_epochs, "seconds": round(time.perf_counter() - started, 1),
        "samples_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 2),
        "final_train_loss": round(result.training_loss, 4), "best_checkpoint": trainer.state.best_model_checkpoint,
        "distilled_from_parent": teacher is not None, "threads": torch.get_num_threads(), "resumed": bool(resume_from),
        "device": str(trainer.args.device), "machine": machine_info(),
    }
    if teacher is not None:
        record.update(temperature=cfg.temperature, alpha=cfg.alpha)
    return trainer.model.to("cpu").eval(), record
