"""Relation classification: a text with two marked entity spans -> the relation between them.

Entity markers ([E1] .. [/E1] around the head, [E2] .. [/E2] around the tail) are inserted into the text and
added to the tokenizer as special tokens (the encoder's embeddings grow by four rows); the model concatenates
the encoder's hidden states at the [E1] and [E2] tokens and classifies them with one linear layer (the
"entity start" representation of Baldini Soares et al., 2019, which beat [CLS] pooling there).

The model finds the markers from input_ids alone (equality with the marker ids), so every runner and the ONNX
export keep the encoder's inputs and return plain `logits`. Inputs are {"text", "head": [s, e], "tail": [s, e]}
dicts (character offsets, end exclusive) or a string tagged as SemEval-2010 Task 8 writes it
('<e1>Paris</e1> is in <e2>France</e2>'), which is what the CLI, /v1 and OIP send.

Truncation keeps both entities: a sequence longer than max_length is cut to a window of tokens around the
markers; when the markers themselves are further apart than max_length allows, the input is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.relations import parse_tagged, span_problem
from ..errors import DataError, ModelError, RequestError
from .base import Task
from .classification import ClassificationTask, _sort_labels

MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
HEAD_FILE = "relation_head.safetensors"  # the linear head; the encoder is a plain AutoModel directory beside it
CONFIG_FILE = "relation_config.json"  # marker tokens and ids, labels: what load_model rebuilds the model from
# Labels meaning "these two entities are not related": SemEval-2010 Task 8's and TACRED's.
NO_RELATION = ("other", "no_relation")
# Marked sentences for the export/quantize parity check (each pair both ways), after the dev split's own examples:
# without markers the model reads [CLS] only, where a trained model is unsure, leaving no decisions to compare.
PARITY_SENTENCES = [
    "<e1>Marie Curie</e1> was born in <e2>Warsaw</e2> in 1867 .",
    "<e1>Tim Cook</e1> is the chief executive of <e2>Apple</e2> .",
    "The <e1>Louvre</e1> is a museum in <e2>Paris</e2> .",
    "The <e1>fire</e1> was caused by a faulty <e2>heater</e2> .",
    "A <e1>wheel</e1> of the <e2>car</e2> came loose on the motorway .",
    "The <e1>company</e1> moved its <e2>headquarters</e2> to Berlin last year .",
    "<e1>Smoke</e1> from the <e2>factory</e2> drifted over the town .",
    "The <e1>letter</e1> was put into an <e2>envelope</e2> and posted .",
    "<e1>Ada Lovelace</e1> worked with <e2>Charles Babbage</e2> on the analytical engine .",
    "The <e1>orchestra</e1> has more than ninety <e2>musicians</e2> .",
    "<e1>Toyota</e1> builds cars at a plant in <e2>Kentucky</e2> .",
    "The <e1>author</e1> finished the <e2>novel</e2> in a small flat in Lisbon .",
]


def is_no_relation(label: str) -> bool:
    return label.lower() in NO_RELATION


def insert_markers(text: str, head: Sequence[int], tail: Sequence[int]) -> str:
    """The text with [E1]..[/E1] around head and [E2]..[/E2] around tail, nothing else changed (the
    tokenizer splits added special tokens out wherever they stand, so no spaces are added)."""
    cuts = sorted([(head[0], MARKERS[0]), (head[1], MARKERS[1]), (tail[0], MARKERS[2]), (tail[1], MARKERS[3])],
                  key=lambda c: c[0])
    out, last = [], 0
    for pos, marker in cuts:
        out += [text[last:pos], marker]
        last = pos
    return "".join(out + [text[last:]])


def as_example(item: Any, where: str, fail: Callable[[str], Exception]) -> dict:
    """A predict/serve input (span dict or tagged string) -> {"text", "head", "tail"}; fail(message) otherwise."""
    if isinstance(item, str):
        try:
            parsed = parse_tagged(item)
        except ValueError as exc:
            raise fail(f"{where}: {exc}.") from None
        if parsed is None:
            raise fail(f"{where} marks no entities. A relation-classification input is a text with the two entities "
                       "tagged, '<e1>Paris</e1> is in <e2>France</e2>', or {\"text\", \"head\": [s, e], \"tail\": [s, e]}.")
        item = parsed
    if not isinstance(item, dict):
        raise fail(f"{where} must be a tagged string or a {{\"text\", \"head\", \"tail\"}} object, "
                   f"got {type(item).__name__}.")
    missing = [k for k in ("text", "head", "tail") if k not in item]
    if missing:
        raise fail(f"{where} lacks {', '.join(missing)}: give {{\"text\", \"head\": [s, e], \"tail\": [s, e]}}.")
    problem = span_problem(item["text"], item["head"], item["tail"])
    if problem:
        raise fail(f"{where}: {problem}.")
    clash = [m for m in MARKERS if m in item["text"]]
    if clash:
        raise fail(f"{where} contains {clash[0]}, one of the entity marker tokens {list(MARKERS)}; remove it.")
    return {"text": item["text"], "head": list(item["head"]), "tail": list(item["tail"])}


def marker_ids(tokenizer) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(list(MARKERS))
    if tokenizer.unk_token_id in ids or None in ids:
        raise ModelError(f"The tokenizer has no entity marker tokens {list(MARKERS)}: this is not a "
                         "relation-classification artifact (fine-tune one with --task relation-classification).")
    return ids


def windowed(enc: dict, markers: list[int], max_length: int, where: str, fail) -> dict:
    """One encoded row (with special_tokens_mask) cut to max_length tokens keeping every marker; the
    leading/trailing special tokens ([CLS], [SEP]) stay."""
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    n = len(ids)
    feat = {k: v for k, v in enc.items() if k != "special_tokens_mask"}
    if n <= max_length:
        return feat
    fixed = [bool(s) and i not in markers for s, i in zip(special, ids)]
    lead = next(j for j in range(n) if not fixed[j])
    trail = next(j for j in range(n) if not fixed[n - 1 - j])
    where_markers = [ids.index(m) for m in markers]
    a, b = min(where_markers), max(where_markers)
    room = max_length - lead - trail
    if b - a + 1 > room:
        raise fail(f"{where}: the two entities and the text between them take {b - a + 1} tokens, more than fit in "
                   f"max_length {max_length}; shorten the text between them or use a model with a longer max_length.")
    start = min(max(lead, a - (room - (b - a + 1)) // 2), n - trail - room)
    keep = [*range(lead), *range(start, start + room), *range(n - trail, n)]
    return {k: [v[j] for j in keep] for k, v in feat.items()}


def RelationClassifier(backbone, num_labels: int, markers: list[int] | None = None):
    """A torch module: encoder -> hidden states at [E1] and [E2] -> concatenated -> linear -> logits. Built in a
    function so that importing this module imports no torch (the CLI imports tasks at start-up)."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class _RelationClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.config = backbone.config
            self.markers = list(markers) if markers else None
            self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
            self.classifier = torch.nn.Linear(2 * backbone.config.hidden_size, num_labels)
            std = getattr(backbone.config, "initializer_range", 0.02)
            torch.nn.init.normal_(self.classifier.weight, std=std)
            torch.nn.init.zeros_(self.classifier.bias)

        @property
        def wrapped_model(self):  # torch_runner.model_input_names reads the encoder's own inputs
            return self.backbone

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
            if self.markers is None:
                raise ModelError("The relation model has no marker ids yet (Task.prepare sets them).")
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                feeds["token_type_ids"] = token_type_ids
            hidden = self.backbone(**feeds).last_hidden_state
            pooled = torch.cat([at_marker(hidden, input_ids, self.markers[0]),
                                at_marker(hidden, input_ids, self.markers[2])], dim=-1)
            logits = self.classifier(self.dropout(pooled))
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

        def save_pretrained(self, path, **kwargs):
            from safetensors.torch import save_file

            self.backbone.save_pretrained(path, **kwargs)
            save_file({k: v.contiguous() for k, v in self.classifier.state_dict().items()}, str(Path(path) / HEAD_FILE))
            labels = [self.config.id2label[i] for i in range(num_labels)] if hasattr(self.config, "id2label") else None
            (Path(path) / CONFIG_FILE).write_text(json.dumps(
                {"markers": list(MARKERS), "marker_ids": self.markers, "pooling": "entity-start",
                 "num_labels": num_labels, "labels": labels}, indent=2))

    return _RelationClassifier()


def at_marker(hidden, input_ids, marker: int):
    """hidden[b, position of marker in row b]; a row without the marker (the random token ids of a parity
    check) reads position 0 instead, so its logits still depend on the encoder rather than only the bias."""
    hit = (input_ids == marker).to(hidden.dtype)
    found = (hidden * hit.unsqueeze(-1)).sum(dim=1)
    missing = 1 - hit.sum(dim=1, keepdim=True).clamp(max=1)
    return found + missing * hidden[:, 0]


class RelationClassificationTask(Task):
    name = "relation-classification"
    primary_metric = "macro_f1_no_other"
    auto_model = "AutoModel"  # the encoder; the head is ours (RelationClassifier)
    warmup_input = "<e1>warm-up</e1> text for <e2>the model</e2>"  # plain text is refused: it marks no entities

    # --- training -------------------------------------------------------------------
    def label_set(self, targets):
        labels = _sort_labels(targets)
        if len(labels) < 2:
            raise DataError(f"Relation classification needs at least two distinct labels in the training data; "
                            f"found {labels}.")
        return labels

    def check_targets(self, targets, labels, source):
        unknown = sorted(set(targets) - set(labels))
        if unknown:
            raise DataError(f"{source} has relation labels outside the model's label set: {unknown[:10]}. "
                            f"The model knows: {labels}.")

    def prepare(self, tokenizer, model) -> None:
        """Add the marker tokens to the tokenizer, grow the embeddings to match, tell the model their ids."""
        tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)},
                                     replace_extra_special_tokens=False)
        emb = model.backbone.get_input_embeddings()
        if emb.num_embeddings < len(tokenizer):
            model.backbone.resize_token_embeddings(len(tokenizer))
        model.markers = marker_ids(tokenizer)

    def train_features(self, examples, tokenizer, label2id, max_length):
        fail = lambda msg: DataError(msg + " (in the training/eval data)")  # noqa: E731
        feats = self._features(examples.inputs, tokenizer, max_length, fail)
        for f, t in zip(feats, examples.targets):
            f["labels"] = label2id[t]
        return feats


    def trainer_metrics(self, id2label):
        def compute(pred):
            preds = np.argmax(pred.predictions, axis=-1)
            return self.score([{"label": id2label[int(p)]} for p in preds], [id2label[int(t)] for t in pred.label_ids])

        return compute

    # --- inference ------------------------------------------------------------------
    def load_model(self, location: str, labels: list[str] | None = None, **kwargs):
        saved_path = Path(location) / CONFIG_FILE
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
        if labels is None and saved is None:
            raise ModelError(f"{location} has no {CONFIG_FILE}: it is not a relation-classification model. "
                             "Fine-tune one with --task relation-classification.")
        backbone = super().load_model(location, None, **kwargs)
        names = labels if labels is not None else saved["labels"] or [str(i) for i in range(saved["num_labels"])]
        backbone.config.id2label = dict(enumerate(names))
        backbone.config.label2id = {l: i for i, l in enumerate(names)}
        model = RelationClassifier(backbone, len(names), saved["marker_ids"] if saved else None)
        if saved is not None and (labels is None or list(labels) == saved["labels"]):
            from safetensors.torch import load_file

            model.classifier.load_state_dict(load_file(str(Path(location) / HEAD_FILE)))
        return model.eval()

    def parity_texts(self, examples=None) -> list[str]:
        pairs = [parse_tagged(s) for s in PARITY_SENTENCES]
        fixed = [insert_markers(p["text"], *spans) for p in pairs for spans in ((p["head"], p["tail"]),
                                                                                 (p["tail"], p["head"]))]
        return [insert_markers(e["text"], e["head"], e["tail"]) for e in examples or []] + fixed

    def encode(self, inputs: Sequence, tokenizer, max_length):
        fail = lambda msg: RequestError(msg, 400)  # noqa: E731
        examples = [as_example(x, f"inputs[{i}]", fail) for i, x in enumerate(inputs)]
        return self._features(examples, tokenizer, max_length, fail), [None] * len(examples)

    def _features(self, examples: list[dict], tokenizer, max_length: int, fail) -> list[dict]:
        markers = marker_ids(tokenizer)
        marked = [insert_markers(e["text"], e["head"], e["tail"]) for e in examples]
        enc = tokenizer(marked, return_special_tokens_mask=True) if marked else {"input_ids": []}
        rows = [{k: enc[k][i] for k in enc.keys()} for i in range(len(marked))]
        return [windowed(r, markers, max_length, f"inputs[{i}]", fail) for i, r in enumerate(rows)]



    # A relation is padded, decoded, printed and put on the wire as a classified text is (LABEL, SCORE).
    collator = ClassificationTask.collator
    decode = ClassificationTask.decode
    show = ClassificationTask.show
    oip_outputs = ClassificationTask.oip_outputs
    oip_values = ClassificationTask.oip_values

    def score(self, predictions, targets):
        """accuracy, macro-F1 over every label, and macro-F1 over the labels that name a relation (what
        SemEval-2010 Task 8 reports, though its official scorer also merges the two directions of a relation)."""
        from sklearn.metrics import f1_score

        pred = [p["label"] for p in predictions]
        related = sorted({l for l in [*targets, *pred] if not is_no_relation(l)})
        macro = float(f1_score(targets, pred, average="macro", zero_division=0))
        no_other = float(f1_score(targets, pred, labels=related, average="macro", zero_division=0)) if related else macro
        return {"accuracy": float(np.mean([p == t for p, t in zip(pred, targets)])), "macro_f1": macro,
                "macro_f1_no_other": no_other}
