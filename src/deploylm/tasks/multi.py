"""Multi-task encoder: one encoder, several heads (sentence classification and/or token classification), one
forward that returns every head's logits by name (`<head>_logits`).

The model is a deploylm module (MultiHeadModel) saved as a plain encoder directory (AutoModel) + every head's
weights (multi_heads.safetensors) + multi_config.json (heads: name, task, labels, data). The task instance of an
artifact is configured from that file (Task.configured), because its outputs are the artifact's own: get_task
("multi") alone knows no heads.

A classification head reads the encoder's pooler output (BERT's [CLS] dense + tanh, as
AutoModelForSequenceClassification does), a token-classification head every token's hidden state (as
AutoModelForTokenClassification does); both are one linear layer after dropout. Each head decodes with its own
task (label + score, IOB2 entities): a prediction is {head: that head's prediction}."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelError
from .base import Task, require_texts
from .wire import TensorSpec

CONFIG_FILE = "multi_config.json"
HEADS_FILE = "multi_heads.safetensors"
HEAD_TASKS = ("classification", "token-classification")  # what a head may be (their labels' shapes differ)
HEAD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # becomes an output name (sst2_logits) and an OIP prefix (SST2_)


@dataclass(frozen=True)
class HeadSpec:
    name: str
    task: str
    data: str  # the dataset alias or directory it is trained on
    labels: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        return f"{self.name}_logits"


def parse_heads(spec: str | None) -> list[HeadSpec]:
    """'sst2:classification,ag_news:classification,conll2003:token-classification' -> HeadSpecs. A head is
    DATA:TASK, where DATA is a dataset alias (the head is named after it) or NAME=DIRECTORY."""
    if not spec or not spec.strip():
        raise ConfigError("--task multi needs --heads NAME:TASK,... e.g. "
                          "--heads sst2:classification,conll2003:token-classification.")
    heads: list[HeadSpec] = []
    for part in (p.strip() for p in spec.split(",")):
        name_data, sep, task = part.rpartition(":")
        if not sep or not name_data or not task:
            raise ConfigError(f"Head '{part}' is not DATA:TASK (DATA: a dataset alias or NAME=DIRECTORY; "
                              f"TASK: one of {', '.join(HEAD_TASKS)}).")
        name, eq, data = name_data.partition("=")
        data = data if eq else name
        if task not in HEAD_TASKS:
            raise ConfigError(f"Head '{part}': task '{task}' cannot be a head; a head is one of {', '.join(HEAD_TASKS)}.")
        if not HEAD_NAME.match(name):
            raise ConfigError(f"Head name '{name}' must be lower-case letters, digits and '_' starting with a letter "
                              "(it names the head's output); write NAME=DIRECTORY to name a head over a directory.")
        if any(h.name == name for h in heads):
            raise ConfigError(f"Head '{name}' is given twice in --heads; each head needs its own name.")
        heads.append(HeadSpec(name, task, data))
    return heads


def MultiHeadModel(backbone, heads: Sequence[HeadSpec]):
    """A torch module: encoder -> {head}_logits for every head. Built in a function so that importing this module
    imports no torch (the CLI imports tasks at start-up)."""
    import torch

    class MultiOutput(dict):  # Trainer reads out["loss"]; runners and the ONNX export read attributes
        __getattr__ = dict.__getitem__

    class _MultiHeadModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.config = backbone.config
            self.specs = list(heads)
            self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
            size = backbone.config.hidden_size
            self.heads = torch.nn.ModuleDict({h.name: torch.nn.Linear(size, len(h.labels)) for h in self.specs})
            std = getattr(backbone.config, "initializer_range", 0.02)
            for layer in self.heads.values():
                torch.nn.init.normal_(layer.weight, std=std)
                torch.nn.init.zeros_(layer.bias)

        @property
        def wrapped_model(self):  # torch_runner.model_input_names reads the encoder's own inputs
            return self.backbone

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, head_id=None):
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                feeds["token_type_ids"] = token_type_ids
            enc = self.backbone(**feeds)
            hidden = self.dropout(enc.last_hidden_state)
            pooled = enc.pooler_output if getattr(enc, "pooler_output", None) is not None else enc.last_hidden_state[:, 0]
            pooled = self.dropout(pooled)
            out = MultiOutput()
            for h in self.specs:
                out[h.output] = self.heads[h.name](pooled if h.task == "classification" else hidden)
            if labels is not None:  # a training batch holds one head's examples (train/multi.py)
                logits = out[self.specs[int(head_id[0])].output]
                out["loss"] = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                                labels.reshape(-1), ignore_index=-100)
            return out

        def save_pretrained(self, path, **kwargs):
            from safetensors.torch import save_file

            self.backbone.save_pretrained(path, **kwargs)
            save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(Path(path) / HEADS_FILE))
            (Path(path) / CONFIG_FILE).write_text(json.dumps(
                {"heads": [{**asdict(h), "labels": list(h.labels)} for h in self.specs],
                 "pooling": {"classification": "pooler", "token-classification": "tokens"}}, indent=2))

    return _MultiHeadModel()


def read_heads(location: str | Path) -> list[HeadSpec]:
    path = Path(location) / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{location} has no {CONFIG_FILE}: it is not a multi-task model. "
                         "Fine-tune one with --task multi --heads NAME:TASK,...")
    return [HeadSpec(h["name"], h["task"], h["data"], tuple(h["labels"])) for h in json.loads(path.read_text())["heads"]]


class HeadTask(Task):
    """One head of a multi-task model seen as its own single task (its output, its decode and metric): what
    finetune evaluates each head with, and what a benchmark compares with a single-task model."""

    def __init__(self, head: HeadSpec):
        from . import get_task

        self.head, self.inner = head, get_task(head.task)
        self.name, self.primary_metric = head.task, self.inner.primary_metric
        self.output_names = (head.output,)
        self.token_level_outputs = (head.output,) if self.inner.token_level_outputs else ()

    def encode(self, inputs, tokenizer, max_length):
        return self.inner.encode(inputs, tokenizer, max_length)

    def decode(self, logits, aux, id2label):
        return self.inner.decode(logits, aux, id2label)

    def score(self, predictions, targets):
        return self.inner.score(predictions, targets)

    def check_targets(self, targets, labels, source):
        return self.inner.check_targets(targets, labels, source)


class MultiTask(Task):
    name = "multi"
    # The export/quantize gate compares parity (every head's logits) and speed only: a dev metric would need every
    # head's dataset. Fine-tuning records each head's dev metric and their mean (multi:dev mean_primary).
    primary_metric = None
    auto_model = "AutoModel"  # the encoder; the heads are ours (MultiHeadModel)
    output_names: tuple[str, ...] = ()  # per artifact: configured()

    def __init__(self, heads: Sequence[HeadSpec] = ()):
        self.heads = list(heads)
        self.output_names = tuple(h.output for h in self.heads)
        self.head_tasks = {h.name: HeadTask(h) for h in self.heads}
        self.token_level_outputs = tuple(h.output for h in self.heads if h.task == "token-classification")

    def configured(self, location) -> "MultiTask":
        return MultiTask(read_heads(location))

    # --- model ----------------------------------------------------------------------
    def new_model(self, location: str, **kwargs):
        """The encoder at `location` (a base model) with fresh heads: what finetune trains."""
        return MultiHeadModel(super().load_model(location, None, **kwargs), self.heads)

    def load_model(self, location: str, labels=None, **kwargs):
        from safetensors.torch import load_file

        heads = self.heads or read_heads(location)
        model = MultiHeadModel(super().load_model(location, None, **kwargs), heads)
        model.heads.load_state_dict(load_file(str(Path(location) / HEADS_FILE)))
        return model.eval()

    # --- inference ------------------------------------------------------------------
    def encode(self, inputs: Sequence, tokenizer, max_length):
        """One encoding for every head; a token head's word alignment (first piece, character spans) is the aux."""
        require_texts(inputs, self.name)
        token_head = next((t for t in self.head_tasks.values() if t.token_level_outputs), None)
        if token_head is not None:
            return token_head.encode(inputs, tokenizer, max_length)
        return next(iter(self.head_tasks.values())).encode(inputs, tokenizer, max_length)

    def decode_rows(self, rows, aux, id2label=None):
        """{head: that head's prediction} per input; each head decodes with its own labels (id2label is unused:
        an artifact's flat label list is every head's, see train/multi.py)."""
        out = [{} for _ in rows]
        for h in self.heads:
            task, names = self.head_tasks[h.name], dict(enumerate(h.labels))
            for pred, row, a in zip(out, rows, aux):
                pred[h.name] = task.decode(row[h.output], a if task.token_level_outputs else None, names)
        return out

    def show(self, item, prediction):
        lines = [str(item)]
        for name, p in prediction.items():
            if "entities" in p:
                shown = ", ".join(f"{e['text']} [{e['entity']}] {e['score']:.2f}" for e in p["entities"]) or "no entities"
            else:
                shown = f"{p['label']} ({p['score']:.3f})"
            lines.append(f"  {name}: {shown}")
        return "\n".join(lines)

    # --- the wire: each head's own outputs, prefixed with its name (SST2_LABEL, CONLL2003_ENTITIES) ----------
    def oip_outputs(self, shapes=None):
        return [TensorSpec(f"{h.name.upper()}_{s.name}", s.datatype, s.shape)
                for h in self.heads for s in self.head_tasks[h.name].inner.oip_outputs(None)]

    def oip_values(self, preds):
        out = {}
        for h in self.heads:
            values = self.head_tasks[h.name].inner.oip_values([p[h.name] for p in preds])
            out.update({f"{h.name.upper()}_{k}": v for k, v in values.items()})
        return out

    def score(self, predictions, targets):
        raise ConfigError("A multi-task model is scored per head (each on its own dataset): see its manifest's "
                          "metrics, or evaluate a head with its single-task data.")
