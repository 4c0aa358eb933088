"""deploylm prune: structured pruning (heads, FFN neurons, whole layers) ranked by importance on task data and
removed physically, or unstructured magnitude pruning; then an optional recovery fine-tune.

  recover (default): importance = E_x |∂L/∂mask| (gradient × activation, Michel et al. 2019) on
      --importance-samples training examples; optional recovery fine-tune (--recover-epochs), optionally
      distilling from the unpruned parent.
  retraining-free: Kwon et al. 2022 (retraining_free.py, mask_tuning.py): Fisher search, rearrangement and
      least-squares mask tuning on a few thousand examples, no gradient step on the weights.

The dev metric is measured on the parent, right after pruning, and after recovery, on the same examples."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..artifacts import Artifact, check_output, create_artifact
from ..config import PruneConfig
from ..errors import ConfigError
from .shrink import count_parameters, is_uniform, layer_shapes

PRUNABLE_TASKS = ("classification", "token-classification", "extractive-qa")
DEFAULT_SAMPLES = {"recover": 256, "retraining-free": 2048}


def check_request(cfg: PruneConfig, parent: Artifact) -> None:
    """The option combinations prune refuses, before anything is loaded or written."""
    structured = bool(cfg.heads or cfg.ffn or cfg.layers)
    if not structured and not cfg.unstructured:
        raise ConfigError("Nothing to prune: pass --heads F and/or --ffn F and/or --layers N (structured), or "
                          "--unstructured F (magnitude), with F in (0, 1).")
    if structured and cfg.unstructured:
        raise ConfigError("--unstructured cannot be combined with --heads/--ffn/--layers in one run; run prune "
                          "twice (structured first, then --unstructured on its output).")
    if cfg.unstructured and cfg.mode == "retraining-free":
        raise ConfigError("--mode retraining-free is structured pruning (Kwon et al. 2022); drop it for "
                          "--unstructured, or pass --heads/--ffn instead.")
    if cfg.distill_from_parent and not cfg.recover_epochs:
        raise ConfigError("--distill-from-parent distils during recovery; pass --recover-epochs N (N > 0) too.")
    if parent.format != "transformers":
        raise ConfigError(f"Artifact {parent.path} is '{parent.format}'; prune takes a transformers-format artifact "
                          "(e.g. the output of deploylm finetune), before export/quantize.")
    if parent.task not in PRUNABLE_TASKS:
        raise ConfigError(f"Artifact {parent.path} is a '{parent.task}' model; prune supports the tasks "
                          f"{', '.join(PRUNABLE_TASKS)} (it needs a task loss on labelled data).")


def _load_data(cfg: PruneConfig, parent: Artifact, task):
    from ..data import load_dataset
    from ..optimize.common import task_data
    from ..train.finetune import train_subset

    data = load_dataset(task_data(parent, cfg.data), cfg.text_column, cfg.label_column)
    if data.task != parent.task:
        raise ConfigError(f"Artifact {parent.path} is a {parent.task} model but {data.source} holds {data.task} data. "
                          "Pass --data with data of the artifact's task.")
    train, dev = data.split(cfg.train_split), data.split(cfg.eval_split)
    if train.targets is None or dev.targets is None:
        raise ConfigError(f"Splits '{cfg.train_split}' and '{cfg.eval_split}' of {data.source} must be labelled "
                          "(importance and the dev metric need labels).")
    task.check_targets(train.targets, parent.labels, f"Split '{cfg.train_split}' of {data.source}")
    task.check_targets(dev.targets, parent.labels, f"Split '{cfg.eval_split}' of {data.source}")
    return data, train_subset(train, cfg.max_train_samples, cfg.seed), dev.head(cfg.max_eval_samples)


def _structured(model, cfg: PruneConfig, batches) -> dict:
    """Measure importance, choose, shrink `model` in place; returns the pruning record."""
    from . import retraining_free
    from .importance import mask_gradients
    from .selection import choose_layers, choose_units
    from .shrink import apply_plan

    grads = mask_gradients(model, batches)
    head_s, ffn_s = grads.mean_abs() if cfg.mode == "recover" else grads.fisher_diagonal()
    kept_layers = choose_layers(head_s, ffn_s, cfg.layers)
    record: dict = {"importance": {"criterion": "mean |grad x activation| of unit masks" if cfg.mode == "recover"
                                   else "Fisher (sum of squared mask gradients)",
                                   "samples": sum(len(b["input_ids"]) for b in batches)}}
    if cfg.mode == "recover":
        kept_h = choose_units(head_s, kept_layers, cfg.heads, "heads")
        kept_f = choose_units(ffn_s, kept_layers, cfg.ffn, "ffn")
    else:
        kept_h, kept_f, search = retraining_free.search(grads, kept_layers, cfg.heads, cfg.ffn)
        record["retraining_free"] = search
    masks = {"heads": kept_h, "ffn": kept_f}
    if cfg.mode == "retraining-free" and cfg.mask_tuning:
        from .mask_tuning import tune_masks

        record["retraining_free"]["mask_tuning"] = tune_masks(model, batches, kept_layers, kept_h, kept_f)
    apply_plan(model, kept_layers, kept_h, kept_f)
    record.update(layers_kept=kept_layers, heads_kept={str(l): masks["heads"][l] for l in kept_layers},
                  ffn_kept={str(l): masks["ffn"][l] for l in kept_layers})
    return record


def _evaluate(task, model, tokenizer, dev, labels, max_length, cfg) -> dict:
    from ..evaluation import evaluate_model

    return evaluate_model(task, model, tokenizer, dev, labels, max_length, cfg.eval_batch_size)


def prune(artifact, cfg: PruneConfig, output: str | Path, overwrite: bool = False, resume: bool = False) -> Artifact:
    from transformers import set_seed

    from ..evaluation import load_tokenizer
    from ..tasks import task_for
    from ..train.finetune import checkpoint_dir
    from .importance import importance_batches

    parent = artifact if isinstance(artifact, Artifact) else Artifact.open(artifact)
    check_request(cfg, parent)
    output = Path(output)
    if not (resume and checkpoint_dir(output).exists()):
        check_output(output, overwrite)
    task = task_for(parent)
    data, train, dev = _load_data(cfg, parent, task)
    # recorded resolved, so that the manifest's config reproduces the run whatever the defaults become
    cfg = cfg.model_copy(update={"data": cfg.data or data.source, "max_length": cfg.max_length or parent.max_length,
                                 "importance_samples": cfg.importance_samples or DEFAULT_SAMPLES[cfg.mode]})
    set_seed(cfg.seed)
    tokenizer, labels = load_tokenizer(parent), parent.labels
    label2id = {l: i for i, l in enumerate(labels)}
    model = task.load_model(str(parent.path))
    shapes_before, params_before = layer_shapes(model), count_parameters(model)
    metric_name = f"{data.name}:{cfg.eval_split}"
    metrics = {"parent": _evaluate(task, model, tokenizer, dev, labels, cfg.max_length, cfg)}
    if cfg.unstructured:
        from .unstructured import magnitude_prune

        record = {"method": "unstructured magnitude", **magnitude_prune(model, cfg.unstructured)}
    else:
        from ..train.finetune import train_subset

        batches = importance_batches(task, train_subset(train, cfg.importance_samples, cfg.seed), tokenizer, label2id,
                                     cfg.max_length)
        record = {"method": "structured", "mode": cfg.mode, **_structured(model, cfg, batches)}
    metrics["pruned"] = _evaluate(task, model, tokenizer, dev, labels, cfg.max_length, cfg)
    training = None
    if cfg.recover_epochs:
        model, training = _recover(model, cfg, task, parent, train, dev, tokenizer, label2id, output, resume, overwrite)
        metrics["recovered"] = _evaluate(task, model, tokenizer, dev, labels, cfg.max_length, cfg)
    shapes = layer_shapes(model)
    record.update(shapes_before=[vars(s) for s in shapes_before], shapes=[vars(s) for s in shapes],
                  params_before=params_before, params_after=count_parameters(model), dev_metrics=metrics)
    final = metrics.get("recovered", metrics["pruned"])
    art = _write(output, model, tokenizer, parent, cfg, task, record, training, overwrite,
                 {metric_name: {**final, "samples": len(dev), "data": data.source}}, data.info)
    shutil.rmtree(checkpoint_dir(output), ignore_errors=True)
    return art


def _recover(model, cfg, task, parent, train, dev, tokenizer, label2id, output, resume, overwrite):
    from .recovery import keep_zeros_callback, recover

    teacher = task.load_model(str(parent.path)) if cfg.distill_from_parent else None
    callbacks = [keep_zeros_callback(model)] if cfg.unstructured else []
    train_ds = task.train_features(train, tokenizer, label2id, cfg.max_length)
    dev_ds = task.train_features(dev, tokenizer, label2id, cfg.max_length)
    return recover(model, cfg, task, train_ds, dev_ds, tokenizer, list(label2id), output, teacher=teacher,
                   resume=resume, overwrite=overwrite, callbacks=callbacks)


def _write(output, model, tokenizer, parent, cfg, task, record, training, overwrite, metrics, data_info) -> Artifact:
    from .pruned_model import SPEC_FILE, write_spec

    shapes = layer_shapes(model)
    uniform = is_uniform(shapes, model.config)
    if uniform and shapes:  # plain transformers: config.json alone rebuilds it
        model.config.intermediate_size = shapes[0].ffn
    record["loads_with"] = "transformers from_pretrained" if uniform else f"deploylm ({SPEC_FILE} + Task.load_model)"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not uniform:
            write_spec(tmp, shapes)
        if cfg.unstructured:
            from .unstructured import compressed_size

            before = parent.path / "model.safetensors"
            record["weights_file"] = {"before": compressed_size(before) if before.is_file() else None,
                                      "after": compressed_size(tmp / "model.safetensors"),
                                      "note": "zeros stay in dense tensors: same file size and the same dense-kernel "
                                              "speed; only the compressed size changes"}

    extra = {"pruning": record, **data_info, **({"training": training} if training else {})}
    return create_artifact(output, write, stage="prune", config=cfg.model_dump(mode="json"), parent=parent.as_parent(),
                           task=parent.task, labels=parent.labels, max_length=cfg.max_length, metrics=metrics,
                           extra=extra, overwrite=overwrite)
