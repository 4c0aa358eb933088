"""Making the student of a distillation: N of the teacher's own layers (`--student-layers`), or a model of the
teacher's task and label set (`--student`), checked before any weight is loaded."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ModelError

# Heads transformers names by these class-name endings; a student whose config names another task's head (or the
# same head with other labels) was trained for something else.
TASK_HEADS = {"classification": "ForSequenceClassification", "token-classification": "ForTokenClassification"}
OTHER_HEADS = ("ForQuestionAnswering", "ForMultipleChoice", "ForCausalLM", "ForConditionalGeneration")


@dataclass
class Student:
    model: object
    tokenizer: object
    init: dict  # the manifest's extra.distillation init record
    layer_map: list[int] = field(default_factory=list)  # student layer i learns from teacher layer layer_map[i]


def uniform_layers(teacher_layers: int, n: int) -> list[int]:
    """The teacher layers a student of n layers keeps (0-based): the last layer of each of n equal blocks,
    TinyBERT's mapping g(m) = m·L/N (1-based). Student layer i stands for teacher block i, so it starts as
    that block's output layer and (with --hidden-loss) learns that layer's states; the last layer is always
    kept, so the head reads what it was trained on. 6 → 3: [1, 3, 5]; 12 → 6: [1, 3, 5, 7, 9, 11]."""
    if not 1 <= n <= teacher_layers:
        raise ConfigError(f"--student-layers {n}: the teacher has {teacher_layers} layers; pass 1 to "
                          f"{teacher_layers}.")
    return [((m + 1) * teacher_layers + n - 1) // n - 1 for m in range(n)]


def layer_list_name(model) -> str:
    """Qualified name of the encoder's ModuleList of layers (bert.encoder.layer, mpnet.encoder.layer, ...)."""
    import torch

    n = model.config.num_hidden_layers
    found = [name for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.ModuleList) and len(mod) == n and name.split(".")[-1] in ("layer", "layers")]
    if not found:
        raise ConfigError(f"Cannot find the {n} encoder layers of a {type(model).__name__}, so no layer subset "
                          "can be made from it; pass --student MODEL instead.")
    return min(found, key=len)


def layer_subset(teacher, n: int, auto_model: str, attn: str | None = None) -> tuple[object, list[int]]:
    """A model like `teacher` with n of its layers (uniform_layers), every weight copied from the teacher:
    embeddings, the kept layers (renumbered 0..n-1), pooler and head. A plain transformers model:
    its config says num_hidden_layers = n."""
    import torch
    import transformers

    kept = uniform_layers(teacher.config.num_hidden_layers, n)
    prefix = layer_list_name(teacher) + "."
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = n
    kwargs = {"attn_implementation": attn} if attn else {}
    student = getattr(transformers, auto_model).from_config(cfg, dtype=torch.float32, **kwargs)
    renumber = {str(j): str(i) for i, j in enumerate(kept)}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if index not in renumber:
                continue
            key = f"{prefix}{renumber[index]}.{rest}"
        state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    return student, kept


def check_student_config(location: str, task: str, labels: list[str], spec: str) -> bool:
    """Refuse a student trained for another task or label set. Returns True when it has the teacher's head
    already (keep it), False when it is a bare encoder that gets a new head with the teacher's labels."""
    manifest = Path(location) / "manifest.json"
    if manifest.is_file():  # a deploylm artifact: its manifest says what it is
        m = json.loads(manifest.read_text())
        if m.get("format", "transformers") != "transformers":
            raise ConfigError(f"--student {spec} is a {m.get('format')} artifact; a student must be trainable: "
                              "give a transformers-format artifact or model.")
        if m.get("task") != task or list(m.get("labels", [])) != list(labels):
            raise ConfigError(f"--student {spec} is a {m.get('task')} model with labels {m.get('labels')}, the "
                              f"teacher a {task} model with labels {labels}. Distillation needs the same task "
                              "and label set: give a student of the teacher's kind, or a bare encoder.")
        return True
    cfg_path = Path(location) / "config.json"
    if not cfg_path.is_file():
        return False  # a Hub id: from_pretrained reads it (and fails clearly) later
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    ours = TASK_HEADS[task]
    other = [a for a in archs if a.endswith(OTHER_HEADS + tuple(h for h in TASK_HEADS.values() if h != ours))]
    if other:
        raise ConfigError(f"--student {spec} has a {other[0]} head; the teacher is a {task} model. Give a "
                          "student of the teacher's task, or a bare encoder (it gets a new head).")
    if not any(a.endswith(ours) for a in archs):
        return False
    id2label = cfg.get("id2label") or {}
    theirs = [id2label.get(str(i)) for i in range(len(id2label))]
    if theirs != list(labels):
        raise ConfigError(f"--student {spec} has a {task} head for labels {theirs}; the teacher's are {labels}. "
                          "Give a student with the teacher's labels, or a bare encoder (it gets a new head).")
    return True


def load_tokenizer(location: str, spec: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not load the tokenizer of --student {spec} from {location}: "
                         f"{str(exc).splitlines()[0][:200]}. A student needs its tokenizer files.") from None
