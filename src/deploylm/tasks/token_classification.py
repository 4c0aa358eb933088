"""Token classification (NER / information extraction), IOB2 tags.

Labels live on words; a word's prediction is read from its first word piece (the others are
ignored in the loss), and words are grouped into entity spans with character offsets."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..errors import DataError
from .base import Task, require_texts
from .wire import TensorSpec, bytes_array

IGNORE = -100


def _entity_type(tag: str) -> str | None:
    return None if tag == "O" or "-" not in tag else tag.split("-", 1)[1]


def group_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """IOB2 tags -> (type, first word, last word inclusive). An I- tag that does not continue an
    entity of its type starts one (seqeval's default, lenient reading)."""
    out: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        etype = _entity_type(tag)
        if etype is None:
            continue
        if tag.startswith("I-") and out and out[-1][0] == etype and out[-1][2] == i - 1:
            out[-1] = (etype, out[-1][1], i)
        else:
            out.append((etype, i, i))
    return out


class TokenClassificationTask(Task):
    name = "token-classification"
    primary_metric = "f1"
    auto_model = "AutoModelForTokenClassification"
    token_level_outputs = ("logits",)

    def label_set(self, targets):
        types = sorted({t for tags in targets for tag in tags if (t := _entity_type(tag))})
        bad = sorted({tag for tags in targets for tag in tags if tag != "O" and not tag[:2] in ("B-", "I-")})
        if bad:
            raise DataError(f"Tags must be IOB2 ('O', 'B-TYPE', 'I-TYPE'); found {bad[:10]}.")
        if not types:
            raise DataError("The training data has no entity tags at all (every tag is 'O'); nothing to learn.")
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def check_targets(self, targets, labels, source):
        unknown = sorted({tag for tags in targets for tag in tags} - set(labels))
        if unknown:
            raise DataError(
                f"{source} has tags outside the model's label set: {unknown[:10]}. The model knows: {labels}."
            )

    def train_features(self, examples, tokenizer, label2id, max_length):
        enc = tokenizer([list(t) for t in examples.inputs], is_split_into_words=True, truncation=True,
                        max_length=max_length)
        feats = []
        for i, tags in enumerate(examples.targets):
            labels, prev = [], None
            for wid in enc.word_ids(i):
                labels.append(IGNORE if wid is None or wid == prev else label2id[tags[wid]])
                prev = wid
            f = {k: enc[k][i] for k in enc.keys()}
            f["labels"] = labels
            feats.append(f)
        return feats

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def trainer_metrics(self, id2label):
        def compute(pred):
            preds = np.argmax(pred.predictions, axis=-1)
            y_true, y_pred = [], []
            for p_row, l_row in zip(preds, pred.label_ids):
                keep = l_row != IGNORE
                y_true.append([id2label[int(x)] for x in l_row[keep]])
                y_pred.append([id2label[int(x)] for x in p_row[keep]])
            return self.score([{"tags": p} for p in y_pred], y_true)

        return compute

    def encode(self, inputs: Sequence, tokenizer, max_length):
        require_texts(inputs, self.name, also=(list, tuple))  # lists: pre-split words
        feats, aux = [], []
        for item in inputs:
            pre_split = not isinstance(item, str)
            enc = tokenizer(list(item) if pre_split else item, is_split_into_words=pre_split, truncation=True,
                            max_length=max_length, return_offsets_mapping=not pre_split)
            wids = enc.word_ids()
            n_words = len(item) if pre_split else (max((w for w in wids if w is not None), default=-1) + 1)
            first: list[int | None] = [None] * n_words
            spans: list[list[int]] | None = None if pre_split else [[-1, -1] for _ in range(n_words)]
            for t, w in enumerate(wids):
                if w is None:
                    continue
                if first[w] is None:
                    first[w] = t
                if spans is not None:
                    s, e = enc["offset_mapping"][t]
                    spans[w] = [s if spans[w][0] < 0 else spans[w][0], e]
            feats.append({k: v for k, v in enc.items() if k != "offset_mapping"})
            aux.append({"first": first, "spans": spans, "text": None if pre_split else item})
        return feats, aux

    def decode(self, logits, aux, id2label):
        z = logits.astype(np.float64)
        probs = np.exp(z - z.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        tags, scores = [], []
        for t in aux["first"]:
            if t is None:  # word cut off by max_length
                tags.append("O")
                scores.append(0.0)
            else:
                k = int(np.argmax(probs[t]))
                tags.append(id2label[k])
                scores.append(float(probs[t, k]))
        out = {"tags": tags}
        if aux["spans"] is not None:
            text = aux["text"]
            out["entities"] = [
                {
                    "entity": etype,
                    "text": text[aux["spans"][a][0]: aux["spans"][b][1]],
                    "start": aux["spans"][a][0],
                    "end": aux["spans"][b][1],
                    "score": float(np.mean(scores[a: b + 1])),
                }
                for etype, a, b in group_entities(tags)
            ]
        return out

    def show(self, item, prediction):
        ents = ", ".join(f"{e['text']} [{e['entity']}] {e['score']:.2f}" for e in prediction["entities"])
        return f"{item}\n  -> {ents or 'no entities'}"

    def oip_outputs(self, shapes=None):
        return [TensorSpec("ENTITIES", "BYTES")]  # one JSON list of {entity, text, start, end, score} per text

    def oip_values(self, preds):
        return {"ENTITIES": bytes_array(json.dumps(p.get("entities", [])) for p in preds)}

    def score(self, predictions, targets):
        from seqeval.metrics import f1_score, precision_score, recall_score

        y_pred = [p["tags"] for p in predictions]
        return {
            "f1": float(f1_score(targets, y_pred)),
            "precision": float(precision_score(targets, y_pred)),
            "recall": float(recall_score(targets, y_pred)),
        }
