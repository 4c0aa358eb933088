"""Extractive question answering (SQuAD-style): the answer is a span of the context.

One input, {"question", "context"}, becomes one feature per window of the context (sliding windows with
overlap `stride(max_length)` tokens, so an answer cut by one window's edge is whole in the next); decode_rows
folds the windows back: the best span over every window by start + end logit (as transformers' run_qa
post-processing), at most MAX_ANSWER_TOKENS long, answered with character offsets into the context.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DataError, ModelError, RequestError
from .base import Task
from .qa_metric import squad_scores
from .wire import TensorSpec, TextCheck, bytes_array, plain_text

N_BEST = 20  # start and end candidates per window
MAX_ANSWER_TOKENS = 30
NO_ANSWER = {"answer": "", "start": 0, "end": 0, "score": 0.0}


def stride(max_length: int) -> int:
    """Tokens two neighbouring windows share: more than the longest answer, a quarter of the window."""
    return max(MAX_ANSWER_TOKENS + 2, max_length // 4)


def max_question_tokens(max_length: int) -> int:
    return max_length // 2


@dataclass(frozen=True)
class Window:
    example: int  # index of the input this window belongs to
    offsets: tuple  # per token: (start, end) character offsets into the context, None for non-context tokens
    context: str


def _inputs(inputs: Sequence) -> tuple[list[str], list[str]]:
    questions, contexts = [], []
    for n, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise RequestError(f"Input {n}: an extractive-qa model takes a question and a context "
                            f"({{'question': ..., 'context': ...}}; on the command line --question Q --context C), "
                            f"not {type(item).__name__}.")
        q, c = item.get("question"), item.get("context")
        if not isinstance(q, str) or not q.strip():
            raise RequestError(f"Input {n}: the question is missing or empty.")
        if not isinstance(c, str) or not c.strip():
            raise RequestError(f"Input {n}: the context is missing or empty; give the text to find the answer in.")
        questions.append(q.lstrip())  # leading blanks only waste window room (transformers' run_qa does the same)
        contexts.append(c)
    return questions, contexts


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class ExtractiveQATask(Task):
    name = "extractive-qa"
    primary_metric = "f1"
    # Training picks its best checkpoint by exact start+end token match on the dev windows: the SQuAD
    # metric needs the whole fold back to text, which transformers' Trainer evaluation loop does not do.
    selection_metric = "span_exact"
    auto_model = "AutoModelForQuestionAnswering"
    output_names = ("start_logits", "end_logits")
    token_level_outputs = ("start_logits", "end_logits")
    oip_inputs = (TensorSpec("QUESTION", "BYTES"), TensorSpec("CONTEXT", "BYTES"))
    warmup_input = {"question": "What is this?", "context": "This is a warm-up text for the model."}

    # --- data ---------------------------------------------------------------------
    def label_set(self, targets: list) -> list[str]:
        return []  # spans, not labels

    def check_targets(self, targets, labels, source):
        for n, t in enumerate(targets):
            if not isinstance(t, dict) or not t.get("text"):
                raise DataError(f"{source} example {n} has no reference answers; extractive QA needs "
                                '{"text": [...], "answer_start": [...]} for every question.')

    def load_model(self, location: str, labels: list[str] | None = None, **kwargs):
        if labels is not None:  # training: a start and an end logit per token, whatever head the checkpoint had
            kwargs.update(num_labels=2, ignore_mismatched_sizes=True)
        return super().load_model(location, None, **kwargs)

    # --- windows ------------------------------------------------------------------
    def _windows(self, inputs: Sequence, tokenizer, max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("extractive-qa needs a fast (Rust) tokenizer for character offsets; this model's "
                             "tokenizer is a slow one. Use a model that ships tokenizer.json.")
        questions, contexts = _inputs(inputs)
        limit = max_question_tokens(max_length)
        for n, ids in enumerate(tokenizer(questions, add_special_tokens=False)["input_ids"]):
            if len(ids) > limit:
                raise RequestError(f"Input {n}: the question is {len(ids)} tokens; at most {limit} fit beside the "
                                f"context in this model's {max_length}-token window. Shorten the question.")
        enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length,
                        stride=stride(max_length), return_overflowing_tokens=True, return_offsets_mapping=True)
        owner = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        keys = list(enc.keys())
        feats, windows = [], []
        for i, ex in enumerate(owner):
            seq = enc.sequence_ids(i)
            feats.append({k: enc[k][i] for k in keys})
            windows.append(Window(ex, tuple(tuple(o) if s == 1 else None for o, s in zip(offsets[i], seq)),
                                  contexts[ex]))
        return feats, windows

    def encode(self, inputs: Sequence, tokenizer, max_length):
        return self._windows(inputs, tokenizer, max_length)

    def train_features(self, examples, tokenizer, label2id, max_length):
        feats, windows = self._windows(examples.inputs, tokenizer, max_length)
        for f, w in zip(feats, windows):
            target = examples.targets[w.example]
            start = target["answer_start"][0]
            f["start_positions"], f["end_positions"] = _answer_tokens(w.offsets, start, start + len(target["text"][0]))
        return feats

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def trainer_metrics(self, id2label):
        def compute(pred):
            start, end = pred.predictions[:2]
            s_true, e_true = pred.label_ids[:2]
            hit = (np.argmax(start, -1) == s_true) & (np.argmax(end, -1) == e_true)
            return {"span_exact": float(hit.mean())}

        return compute

    # --- the wire: QUESTION + CONTEXT in; ANSWER, SCORE, START, END (character offsets) out ---------------
    def inputs_from_oip(self, tensors):
        return [{"question": q, "context": c} for q, c in zip(tensors["QUESTION"], tensors["CONTEXT"])]

    def inputs_from_json(self, items: list, text: TextCheck = plain_text) -> list:
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RequestError(f'inputs[{i}] must be an object {{"question": ..., "context": ...}}, '
                                   f"not {type(item).__name__}.", 400)
            missing = [k for k in ("question", "context") if k not in item]
            if missing:
                raise RequestError(f"inputs[{i}] has no '{missing[0]}'; an extractive-qa model answers a question "
                                   "from a context, both strings.", 400)
            out.append({"question": text(item["question"], f"inputs[{i}].question"),
                        "context": text(item["context"], f"inputs[{i}].context")})
        return out

    def oip_outputs(self, shapes=None):
        return [TensorSpec("ANSWER", "BYTES"), TensorSpec("SCORE", "FP32"), TensorSpec("START", "INT64"),
                TensorSpec("END", "INT64")]

    def oip_values(self, preds):
        return {"ANSWER": bytes_array(p["answer"] for p in preds),
                "SCORE": np.array([p["score"] for p in preds], dtype=np.float32),
                "START": np.array([p["start"] for p in preds], dtype=np.int64),
                "END": np.array([p["end"] for p in preds], dtype=np.int64)}

    # --- folding windows back -------------------------------------------------------
    def decode_rows(self, rows, aux, id2label):
        by_example: dict[int, list] = defaultdict(list)
        for row, window in zip(rows, aux):
            by_example[window.example].append((row, window))
        return [_best_span(by_example[n]) for n in range(len(by_example))]

    def decode(self, logits, aux, id2label):  # one window alone: decode_rows is the entry point
        return _best_span([(logits, aux)])

    def show(self, item, prediction):
        p = prediction
        return f"{p['answer']!r} ({p['score']:.3f}) [{p['start']}:{p['end']}]  {item['question']}"

    def score(self, predictions, targets):
        return squad_scores([p["answer"] for p in predictions], [t["text"] for t in targets])


def _answer_tokens(offsets: tuple, start: int, end: int) -> tuple[int, int]:
    """Token indices of the answer's first and last token in this window; (0, 0) (the [CLS] position, as
    transformers' run_qa) when the answer is not wholly inside the window."""
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if offsets[ctx[0]][0] > start or offsets[ctx[-1]][1] < end:
        return 0, 0
    first = next(i for i in ctx if offsets[i][1] > start)
    last = next(i for i in reversed(ctx) if offsets[i][0] < end)
    return first, last


def _best_span(windows: list) -> dict:
    best, best_logit = dict(NO_ANSWER), -np.inf
    for row, w in windows:
        start_logits, end_logits = np.asarray(row["start_logits"]), np.asarray(row["end_logits"])
        ctx = np.array([i for i, o in enumerate(w.offsets) if o is not None], dtype=np.int64)
        if ctx.size == 0:
            continue
        s_cand = ctx[np.argsort(start_logits[ctx])[::-1][:N_BEST]]
        e_cand = ctx[np.argsort(end_logits[ctx])[::-1][:N_BEST]]
        total = start_logits[s_cand][:, None] + end_logits[e_cand][None, :]
        length = e_cand[None, :] - s_cand[:, None]
        total = np.where((length >= 0) & (length < MAX_ANSWER_TOKENS), total, -np.inf)
        k = np.unravel_index(np.argmax(total), total.shape)
        if not np.isfinite(total[k]) or total[k] <= best_logit:
            continue
        s, e = int(s_cand[k[0]]), int(e_cand[k[1]])
        best_logit = float(total[k])
        # The score: probability of this start and this end among the window's context tokens.
        p = _softmax(start_logits[ctx].astype(np.float64))[ctx == s][0] * \
            _softmax(end_logits[ctx].astype(np.float64))[ctx == e][0]
        a, b = w.offsets[s][0], w.offsets[e][1]
        best = {"answer": w.context[a:b], "start": int(a), "end": int(b), "score": float(p)}
    return best
