"""Sequence classification: encoder + linear head; accuracy (and macro-F1)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError
from .base import Task, require_texts
from .wire import TensorSpec, bytes_array


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sort_labels(labels) -> list[str]:
    labels = set(labels)
    if all(l.lstrip("-").isdigit() for l in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class ClassificationTask(Task):
    name = "classification"
    primary_metric = "accuracy"
    auto_model = "AutoModelForSequenceClassification"

    def label_set(self, targets: list) -> list[str]:
        labels = _sort_labels(targets)
        if len(labels) < 2:
            raise DataError(f"Classification needs at least two distinct labels in the training data; found {labels}.")
        return labels

    def check_targets(self, targets, labels, source):
        unknown = sorted(set(targets) - set(labels))
        if unknown:
            raise DataError(
                f"{source} has labels outside the model's label set: {unknown[:10]}. "
                f"The model knows: {labels}. Fix the data or train on data that includes these labels."
            )

    def train_features(self, examples, tokenizer, label2id, max_length):
        enc = tokenizer(list(examples.inputs), truncation=True, max_length=max_length)
        feats = [{k: enc[k][i] for k in enc.keys()} for i in range(len(examples))]
        for f, t in zip(feats, examples.targets):
            f["labels"] = label2id[t]
        return feats

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def trainer_metrics(self, id2label):
        def compute(pred):
            preds = np.argmax(pred.predictions, axis=-1)
            return {"accuracy": float((preds == pred.label_ids).mean())}

        return compute

    def encode(self, inputs: Sequence[str], tokenizer, max_length):
        require_texts(inputs, self.name)
        enc = tokenizer(list(inputs), truncation=True, max_length=max_length)
        feats = [{k: enc[k][i] for k in enc.keys()} for i in range(len(inputs))]
        return feats, [None] * len(inputs)

    def decode(self, logits, aux, id2label):
        probs = _softmax(logits.astype(np.float64))
        k = int(np.argmax(probs))
        return {"label": id2label[k], "score": float(probs[k])}

    def show(self, item, prediction):
        return f"{prediction['label']} ({prediction['score']:.3f})  {item}"

    def oip_outputs(self, shapes=None):
        return [TensorSpec("LABEL", "BYTES"), TensorSpec("SCORE", "FP32")]

    def oip_values(self, preds):
        return {"LABEL": bytes_array(p["label"] for p in preds),
                "SCORE": np.array([p["score"] for p in preds], dtype=np.float32)}

    def score(self, predictions, targets):
        from sklearn.metrics import f1_score

        pred = [p["label"] for p in predictions]
        acc = float(np.mean([p == t for p, t in zip(pred, targets)]))
        return {"accuracy": acc, "macro_f1": float(f1_score(targets, pred, average="macro"))}
