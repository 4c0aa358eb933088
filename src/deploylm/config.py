"""Typed, validated stage configs. One schema per stage: the CLI's --config file, the pipeline
YAML and the manifest all use it, so a manifest's config can be fed back to reproduce a run."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

TaskName = Literal["classification", "token-classification", "extractive-qa", "relation-classification", "multi"]


class StageConfig(BaseModel):
    """Base: unknown keys are an error (a misspelt key must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataConfig(StageConfig):
    data: str = Field(description="dataset directory, alias (sst2, conll2003, ...) or hf:NAME[:CONFIG]")
    text_column: str | None = None
    label_column: str | None = None
    train_split: str = "train"
    eval_split: str = "dev"
    max_train_samples: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=None, gt=0)


class FinetuneConfig(DataConfig):
    # None only for task multi, whose heads name their datasets (the others check it: finetune).
    data: str | None = Field(default=None, description="dataset directory, alias (sst2, conll2003, ...) or hf:NAME[:CONFIG]")
    model: str = "minilm-l6"
    task: TaskName = "classification"
    # task multi: DATA:TASK,... (tasks/multi.py parse_heads); max_train_samples applies per head.
    heads: str | None = None
    epochs: float = Field(default=3.0, gt=0)
    learning_rate: float = Field(default=2e-5, gt=0)
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=64, gt=0)
    max_length: int = Field(default=128, gt=1, le=8192)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    logging_steps: int = Field(default=50, gt=0)


class EvalConfig(DataConfig):
    batch_size: int = Field(default=64, gt=0)


C = TypeVar("C", bound=StageConfig)


def _read_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} does not exist. Pass the path of a YAML or JSON file.")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml/json each raise their own types
        raise ConfigError(f"Config file {p} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {p} must hold a mapping of option: value, not {type(data).__name__}.")
    return data


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Validate `values` against `cls`; turn pydantic's errors into one readable ConfigError."""
    known = set(cls.model_fields)
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"Unknown key(s) in {source}: {', '.join(hints)}. Valid keys for this stage: {', '.join(sorted(known))}."
        )
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid {source}: {problems}.") from None


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """File values first, then every override that is not None (CLI flags win over the file)."""
    values: dict[str, Any] = _read_file(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(cls, values, source=str(path) if path else "options")


_TRAINING = FinetuneConfig.model_fields  # distill's training options are finetune's, with its defaults: one place


class DistillConfig(DataConfig):
    """`deploylm distill`: a student trained on a teacher artifact's soft targets (compress/distill.py)."""

    teacher: str | None = Field(default=None, description="teacher artifact; a pipeline step: the previous one")
    student: str | None = Field(default=None, description="student model: alias, HF directory or artifact")
    student_layers: int | None = Field(default=None, ge=1, description="student = N of the teacher's layers")
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the soft (teacher) term")
    hidden_loss: bool = False
    attention_loss: bool = False
    hidden_weight: float = Field(default=1.0, gt=0)
    attention_weight: float = Field(default=1.0, gt=0)
    extra_text: str | None = Field(default=None, description="unlabelled text: FILE (one per line) or DATA[:SPLIT]")
    max_extra_samples: int | None = Field(default=None, gt=0)
    epochs: float = _TRAINING["epochs"]
    learning_rate: float = _TRAINING["learning_rate"]
    batch_size: int = _TRAINING["batch_size"]
    eval_batch_size: int = _TRAINING["eval_batch_size"]
    max_length: int = _TRAINING["max_length"]
    warmup_ratio: float = _TRAINING["warmup_ratio"]
    weight_decay: float = _TRAINING["weight_decay"]
    seed: int = _TRAINING["seed"]
    device: Literal["auto", "cpu", "cuda"] = _TRAINING["device"]
    logging_steps: int = _TRAINING["logging_steps"]


class PruneConfig(DataConfig):
    """deploylm prune (compress/prune.py). Fractions are of the units removed; None/0: that kind untouched."""

    data: str | None = Field(default=None, description="task data (importance, recovery, dev metric); default: the parent's")
    heads: float | None = Field(default=None, ge=0, lt=1, description="fraction of all attention heads removed")
    ffn: float | None = Field(default=None, ge=0, lt=1, description="fraction of all FFN neurons removed")
    layers: int | None = Field(default=None, ge=0, description="whole encoder layers removed")
    unstructured: float | None = Field(default=None, ge=0, lt=1, description="fraction of encoder Linear weights zeroed")
    mode: Literal["recover", "retraining-free"] = "recover"
    mask_tuning: bool = Field(default=True, description="retraining-free: least-squares tuning of the kept masks")
    # default: 256 (recover), 2048 (retraining-free, the 'few thousand' of Kwon et al.)
    importance_samples: int | None = Field(default=None, gt=0)
    recover_epochs: float = Field(default=0.0, ge=0)
    distill_from_parent: bool = False
    temperature: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)
    learning_rate: float = Field(default=3e-5, gt=0)
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=64, gt=0)
    max_length: int | None = Field(default=None, gt=1, le=8192, description="default: the parent's")
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    logging_steps: int = Field(default=50, gt=0)
