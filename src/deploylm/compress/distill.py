"""`deploylm distill`: train a student on a teacher artifact's soft targets (Hinton et al. 2015) and the hard
labels, optionally with hidden-state / attention losses and unlabelled transfer text the teacher labels.

Teacher and student each tokenize the text themselves. The teacher labels every row once, before training
(one batched, length-sorted pass), rather than at every step of every epoch: in eval mode it is a fixed
function of its tokens, so the targets are the same and an E-epoch run costs E times fewer teacher forwards.
Token classification lines the two up on words (each word's first sub-token, where its label lives), so
different tokenizers work there too. Only the layer losses need the teacher's inner states, and so a teacher
forward at each step (compress/kd.py DistillationTrainer); they need the same tokenization and widths."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Artifact, check_output, create_artifact
from ..config import DistillConfig
from ..errors import ConfigError, DataError, ModelError
from ..stages import Stage, register_stage

# compress/kd.py's batch keys, here so that importing this module (every pipeline does) loads no transformers
TEACHER_LOGITS, HAS_LABEL = "kd_teacher_logits", "kd_has_label"

SUPPORTED_TASKS = ("classification", "token-classification")


@dataclass
class _Run:
    """Everything distill checked and prepared before training starts (nothing is written until then)."""

    cfg: DistillConfig
    task: object
    teacher_art: Artifact
    teacher: object
    teacher_tok: object
    student: object  # student.Student
    data: object  # the TaskDataset
    dev: object  # the dev Examples, for the final metric
    train_ds: list[dict]
    dev_ds: list[dict]
    extra: object | None

    @property
    def layer_losses(self) -> bool:
        return self.cfg.hidden_loss or self.cfg.attention_loss


def distill(cfg: DistillConfig, output: str | Path, overwrite: bool = False, resume: bool = False) -> Artifact:
    from transformers import AutoTokenizer, set_seed

    from ..train.finetune import checkpoint_dir

    output = Path(output)
    if not (resume and checkpoint_dir(output).exists()):
        check_output(output, overwrite)
    if (cfg.student is None) == (cfg.student_layers is None):
        raise ConfigError("Give exactly one of --student MODEL (a model of its own) and --student-layers N (N of the "
                          f"teacher's layers); {'both were' if cfg.student else 'neither was'} given.")
    teacher_art, task = open_teacher(cfg.teacher)
    labels = teacher_art.labels
    data, train, dev = _task_data(cfg, task, labels)
    extra = load_extra_text(cfg.extra_text, task, cfg.max_extra_samples, cfg.seed) if cfg.extra_text else None
    set_seed(cfg.seed)
    attn = {"attn_implementation": "eager"} if cfg.attention_loss else {}  # sdpa returns no attention weights
    teacher = task.load_model(str(teacher_art.path), **attn)
    teacher_tok = AutoTokenizer.from_pretrained(str(teacher_art.path))
    student = make_student(cfg, teacher, teacher_tok, task, labels, attn)
    label2id = {l: i for i, l in enumerate(labels)}
    parts = [(train, True)] + ([(extra, False)] if extra is not None else [])
    train_ds, shared = kd_features(task, parts, student.tokenizer, teacher_tok, label2id, cfg.max_length)
    dev_ds, _ = kd_features(task, [(dev, True)], student.tokenizer, teacher_tok, label2id, cfg.max_length)
    check_layer_losses(cfg, student, teacher, shared)
    run = _Run(cfg, task, teacher_art, teacher, teacher_tok, student, data, dev, train_ds, dev_ds, extra)
    model, training = _train(run, output, overwrite, resume)
    return _save(run, model, training, output, overwrite)


def _train(run: _Run, output: Path, overwrite: bool, resume: bool):
    """-> (the trained student on the CPU, the manifest's training record)."""
    from ..train.finetune import (LossThroughputCallback, _prepare_checkpoints, checkpoint_dir, training_arguments,
                                  training_record, use_own_progress_bar)
    from .kd import DistillationTrainer

    cfg, task, student = run.cfg, run.task, run.student
    args = training_arguments(cfg, checkpoint_dir(output), task, len(run.train_ds), remove_unused_columns=False)
    if not run.layer_losses:  # the teacher labels every row once; training then needs only the student
        for ds in (run.train_ds, run.dev_ds):
            attach_teacher_logits(task, run.teacher, ds, cfg.eval_batch_size, args.device,
                                  run.teacher_tok.pad_token_id)
    resume_from = _prepare_checkpoints(checkpoint_dir(output), cfg, resume, overwrite)
    trainer = DistillationTrainer(
        model=student.model, args=args, train_dataset=[f["student"] for f in run.train_ds],
        eval_dataset=[f["student"] for f in run.dev_ds], data_collator=KDCollator(task.collator(student.tokenizer)),
        compute_metrics=task.trainer_metrics(dict(enumerate(run.teacher_art.labels))),
        callbacks=[LossThroughputCallback()], teacher=run.teacher if run.layer_losses else None,
        temperature=cfg.temperature, alpha=cfg.alpha, layer_map=student.layer_map,
        hidden_weight=cfg.hidden_weight if cfg.hidden_loss else 0.0,
        attention_weight=cfg.attention_weight if cfg.attention_loss else 0.0)
    use_own_progress_bar(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume_from else None)
    seconds = time.perf_counter() - started
    run.teacher.to("cpu")
    training = training_record(trainer, result, len(run.train_ds), cfg.epochs, seconds, bool(resume_from))
    return trainer.model.to("cpu").eval(), training  # evaluated and saved the way it will be served here


def _save(run: _Run, model, training: dict, output: Path, overwrite: bool) -> Artifact:
    import shutil

    from ..evaluation import evaluate_model
    from ..train.finetune import checkpoint_dir

    cfg, labels = run.cfg, run.teacher_art.labels
    metrics = evaluate_model(run.task, model, run.student.tokenizer, run.dev, labels, cfg.max_length,
                             cfg.eval_batch_size)
    key = f"{run.data.name}:{cfg.eval_split}"
    record = {"teacher": run.teacher_art.as_parent(), **run.student.init, "layer_map": run.student.layer_map or None,
              "losses": ["kd"] + (["hidden"] if cfg.hidden_loss else []) + (["attention"] if cfg.attention_loss else []),
              "temperature": cfg.temperature, "alpha": cfg.alpha,
              "teacher_targets": "each step" if run.layer_losses else "once, before training",
              "extra_text": None if run.extra is None else {"source": cfg.extra_text, "rows": len(run.extra)},
              "teacher_metrics": run.teacher_art.metrics.get(key)}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        run.student.tokenizer.save_pretrained(tmp)

    art = create_artifact(
        output, write, stage="distill", config=cfg.model_dump(mode="json"), parent=run.teacher_art.as_parent(),
        task=run.task.name, labels=labels, max_length=cfg.max_length,
        metrics={key: {**metrics, "samples": len(run.dev), "data": run.data.source}},
        extra={"training": training, "distillation": record, **run.data.info}, overwrite=overwrite)
    shutil.rmtree(checkpoint_dir(output), ignore_errors=True)
    return art


def open_teacher(path: str | None):
    from ..tasks import task_for

    if not path:
        raise ConfigError("No teacher given. Pass --teacher ARTIFACT (a fine-tuned deploylm artifact).")
    art = Artifact.open(path)
    if art.format != "transformers":
        raise ConfigError(f"Teacher {art.path} is a {art.format} artifact; the teacher must be a transformers-format "
                          "artifact (the fine-tuned model, before export or quantization).")
    if art.task not in SUPPORTED_TASKS:
        raise ConfigError(f"Teacher {art.path} is a {art.task} model; distill supports {', '.join(SUPPORTED_TASKS)}.")
    return art, task_for(art)


def _task_data(cfg: DistillConfig, task, labels: list[str]):
    from ..data import load_dataset
    from ..train.finetune import train_subset

    if not cfg.data:
        raise DataError("No dataset given. Pass --data with the labelled data to distill on (a directory or alias).")
    data = load_dataset(cfg.data, cfg.text_column, cfg.label_column)
    if data.task != task.name:
        raise ConfigError(f"The teacher is a {task.name} model but {data.source} holds {data.task} data.")
    train, dev = data.split(cfg.train_split), data.split(cfg.eval_split)
    if train.targets is None or dev.targets is None:
        raise DataError(f"Splits '{cfg.train_split}' and '{cfg.eval_split}' of {data.source} must be labelled; "
                        "unlabelled text goes in --extra-text.")
    for name, ex in ((cfg.train_split, train), (cfg.eval_split, dev)):
        task.check_targets(ex.targets, labels, f"Split '{name}' of {data.source} (the teacher's labels)")
    return data, train_subset(train, cfg.max_train_samples, cfg.seed), dev.head(cfg.max_eval_samples)


def load_extra_text(spec: str, task, max_rows: int | None, seed: int):
    """Unlabelled transfer text: FILE (one text per line; token classification: words split on whitespace) or
    DATA[:SPLIT] (a dataset's split, default train; its labels, if any, are not used) -> Examples without
    targets."""
    from ..data import Examples, load_dataset
    from ..train.finetune import train_subset

    path = Path(spec).expanduser()
    if path.is_file():
        lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        inputs = [l.split() for l in lines] if task.token_level_outputs else lines
    else:
        base, split = _data_and_split(spec)
        try:
            data = load_dataset(base)
        except DataError as exc:
            raise DataError(f"--extra-text {spec}: {exc} (--extra-text takes a text file, one text per line, or "
                            "DATA[:SPLIT]).") from None
        if data.task != task.name:
            raise ConfigError(f"--extra-text {spec} holds {data.task} data; the teacher is a {task.name} model.")
        inputs = list(data.split(split).inputs)
    if not inputs:
        raise DataError(f"--extra-text {spec} holds no text.")
    return train_subset(Examples(inputs, [None] * len(inputs)), max_rows, seed)


def _data_and_split(spec: str) -> tuple[str, str]:
    """sst2:test -> (sst2, test); DIR -> (DIR, train); hf:NAME:CONFIG:SPLIT -> (hf:NAME:CONFIG, SPLIT)."""
    if spec.startswith("hf:"):
        parts = spec.split(":")
        return (":".join(parts[:3]), parts[3]) if len(parts) > 3 else (spec, "train")
    if ":" in spec and not Path(spec).exists():
        base, split = spec.rsplit(":", 1)
        return base, split or "train"
    return spec, "train"


def make_student(cfg: DistillConfig, teacher, teacher_tok, task, labels: list[str], attn: dict):
    from ..models.registry import hub_error, resolve_model
    from .student import Student, check_student_config, layer_subset, load_tokenizer, uniform_layers

    n_teacher = teacher.config.num_hidden_layers
    if cfg.student_layers is not None:
        model, kept = layer_subset(teacher, cfg.student_layers, task.auto_model, attn.get("attn_implementation"))
        return Student(model, teacher_tok, {"init": "teacher layers", "layers_kept": kept,
                                            "teacher_layers": n_teacher}, kept)
    source = resolve_model(cfg.student)
    keep_head = check_student_config(source.location, task.name, labels, cfg.student)
    try:
        model = task.load_model(source.location, None if keep_head else labels, **attn)
    except OSError as exc:
        if source.is_local:
            raise ModelError(f"Could not load --student {cfg.student} from {source.location}: {exc}") from None
        raise hub_error(source, exc) from None
    n = model.config.num_hidden_layers
    layer_map = uniform_layers(n_teacher, n) if n <= n_teacher else []
    init = {"init": cfg.student, "student": source.as_parent(), "head": "kept" if keep_head else "new",
            "student_layers": n}
    return Student(model, load_tokenizer(source.location, cfg.student), init, layer_map)


def check_layer_losses(cfg: DistillConfig, student, teacher, shared_tokens: bool) -> None:
    asked = [n for n, on in (("--hidden-loss", cfg.hidden_loss), ("--attention-loss", cfg.attention_loss)) if on]
    if not asked:
        return
    s, t = student.model.config, teacher.config
    problems = []
    if not student.layer_map:
        problems.append(f"the student has more layers ({s.num_hidden_layers}) than the teacher ({t.num_hidden_layers})")
    if cfg.hidden_loss and s.hidden_size != t.hidden_size:
        problems.append(f"hidden sizes differ (student {s.hidden_size}, teacher {t.hidden_size})")
    if cfg.attention_loss and s.num_attention_heads != t.num_attention_heads:
        problems.append(f"head counts differ (student {s.num_attention_heads}, teacher {t.num_attention_heads})")
    if not shared_tokens:
        problems.append("they tokenize the text differently, so their positions do not line up")
    if problems:
        raise ConfigError(f"{' and '.join(asked)} compare student and teacher layer by layer, which needs the same "
                          f"tokenizer and shapes, but {'; '.join(problems)}. Drop {' and '.join(asked)} (logit "
                          "distillation works between any two models), or use --student-layers N.")


def kd_features(task, parts, student_tok, teacher_tok, label2id: dict, max_length: int):
    """[(Examples, labelled)] -> ([{"student": features, "teacher": features, "first": ...}], shared) where
    `shared` says both tokenizers gave every row the same ids (then the teacher can read the student's
    batch). Unlabelled rows get a placeholder target and kd_has_label False (soft term only)."""
    from ..data import Examples

    out, shared = [], True
    for examples, labelled in parts:
        if not labelled:  # placeholder targets: they mark the positions the soft term covers, nothing else
            first = next(iter(label2id))  # any label: a row's own (classification) or each word's (tokens)
            fill = [[first] * len(x) for x in examples.inputs] if task.token_level_outputs else [first] * len(examples)
            examples = Examples(examples.inputs, fill)
        s_feats = task.train_features(examples, student_tok, label2id, max_length)
        t_feats = task.train_features(examples, teacher_tok, label2id, max_length)
        firsts = _first_tokens(examples, student_tok, teacher_tok, max_length) if task.token_level_outputs else None
        for i, (s, t) in enumerate(zip(s_feats, t_feats)):
            s[HAS_LABEL] = labelled
            shared = shared and s["input_ids"] == t["input_ids"]
            out.append({"student": s, "teacher": {k: v for k, v in t.items() if k != "labels"},
                        "first": firsts[i] if firsts else None})
    return out, shared


def _first_tokens(examples, student_tok, teacher_tok, max_length: int) -> list[dict[int, int]]:
    """Per row: student position of each word's first sub-token -> the teacher's position of that word's first
    sub-token (the same tokenizer call as the task's train_features, so the same positions)."""
    words = [list(x) for x in examples.inputs]

    def firsts(tok):
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length)
        rows = []
        for i in range(len(words)):
            first: dict[int, int] = {}
            for pos, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in first:
                    first[w] = pos
            rows.append(first)
        return rows

    return [{p: t[w] for w, p in s.items() if w in t} for s, t in zip(firsts(student_tok), firsts(teacher_tok))]


def attach_teacher_logits(task, teacher, rows: list[dict], batch_size: int, device, pad_id: int | None = 0) -> None:
    """The teacher labels each row once: its logits go into the student's features (TEACHER_LOGITS). Token
    classification: at each labelled student position, the teacher's logits at the same word's first
    sub-token; a word the teacher's max_length cut off counts in neither term (its label becomes -100)."""
    import numpy as np

    logits = teacher_logits(teacher, [r["teacher"] for r in rows], batch_size, device, pad_id or 0)
    for r, z in zip(rows, logits):
        s = r["student"]
        if not task.token_level_outputs:
            s[TEACHER_LOGITS] = z
            continue
        target = np.zeros((len(s["input_ids"]), z.shape[-1]), dtype=np.float32)
        for p, label in enumerate(s["labels"]):
            if label == -100:
                continue
            if p in r["first"]:
                target[p] = z[r["first"][p]]
            else:
                s["labels"][p] = -100
        s[TEACHER_LOGITS] = target


def teacher_logits(teacher, feats: list[dict], batch_size: int, device, pad_id: int = 0) -> list:
    """The teacher's logits for each feature (token-level ones cut to the feature's tokens), in length-sorted
    padded batches on the training device."""
    import torch

    from ..runtime.batching import length_batches, pad_batch
    from ..runtime.torch_runner import model_input_names

    teacher = teacher.eval().to(device)
    names = model_input_names(teacher)
    out: list = [None] * len(feats)
    with torch.inference_mode():
        for idx in length_batches(feats, batch_size):
            batch = pad_batch([feats[i] for i in idx], pad_id, names)
            z = teacher(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = z[row, : len(feats[i]["input_ids"])] if z.ndim == 3 else z[row]
    return out


class KDCollator:
    """The task's collator for the model inputs and labels, plus the distillation keys: kd_has_label per row
    and the teacher's logits (token-level ones padded like the tokens, on the tokenizer's padding side)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, features: list[dict]) -> dict:
        import numpy as np
        import torch

        kd = (TEACHER_LOGITS, HAS_LABEL)
        batch = self.base([{k: v for k, v in f.items() if k not in kd} for f in features])
        batch[HAS_LABEL] = torch.tensor([bool(f.get(HAS_LABEL, True)) for f in features])
        if TEACHER_LOGITS in features[0]:
            z = [np.asarray(f[TEACHER_LOGITS], dtype=np.float32) for f in features]
            if z[0].ndim == 2:
                width, left = batch["input_ids"].shape[1], self.base.tokenizer.padding_side == "left"
                pad = [((width - len(x), 0) if left else (0, width - len(x)), (0, 0)) for x in z]
                z = [np.pad(x, p) for x, p in zip(z, pad)]
            batch[TEACHER_LOGITS] = torch.from_numpy(np.stack(z))
        return batch


def _distill_stage(parent, cfg: DistillConfig, output: Path, overwrite: bool, resume: bool = False) -> Artifact:
    """Pipeline step `- distill: {student_layers: 3, data: sst2}`: the previous step's artifact is the teacher."""
    if parent is not None and "teacher" not in cfg.model_fields_set:
        cfg = cfg.model_copy(update={"teacher": str(parent.path)})
    return distill(cfg, output, overwrite=overwrite, resume=resume)


register_stage(Stage("distill", DistillConfig, _distill_stage))
