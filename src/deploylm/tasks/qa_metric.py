"""SQuAD v1.1's exact match and token F1, as its official evaluation script computes them.

Why by hand: `evaluate`'s "squad" metric is this same script, but `evaluate.load("squad")` fetches it from the
Hugging Face Hub at run time, which deploylm must not need. It is twenty lines; the tests check it against
values worked out by hand from the official script's rules.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean over questions of the best score against any reference answer; fractions in [0, 1]
    (the official script prints them x100)."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = [max(exact_match(p, t) for t in refs) for p, refs in zip(predictions, references)]
    f1 = [max(token_f1(p, t) for t in refs) for p, refs in zip(predictions, references)]
    return {"exact_match": sum(em) / len(em), "f1": sum(f1) / len(f1)}
