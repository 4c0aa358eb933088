"""Information extraction end to end: an NER artifact finds the entities of each text, a relation-classification
artifact labels every ordered pair of them. One dict per text:
{"text", "entities": [NER's entity dicts], "relations": [{"head": i, "tail": j, "label", "score"}],
"skipped_pairs": n}, where i and j index `entities` and pairs judged "no relation" are left out.

Both models run through the ordinary runners (torch or ONNX artifacts alike) and the tasks' own encode/decode,
so extraction sees exactly what `deploylm predict` of each artifact would."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .artifacts import Artifact
from .errors import ConfigError, RequestError
from .evaluation import load_tokenizer
from .tasks import get_task
from .tasks.base import run_features
from .tasks.relation_classification import is_no_relation

NER_TASK, RELATION_TASK = "token-classification", "relation-classification"


def _open(path, task: str, option: str) -> Artifact:
    art = path if isinstance(path, Artifact) else Artifact.open(path)
    if art.task != task:
        raise ConfigError(f"{option} {art.path} is a {art.task} artifact; it must be a {task} one.")
    return art


def candidate_pairs(entities: list[dict], max_pairs: int | None) -> tuple[list[tuple[int, int]], int]:
    """Every ordered pair of distinct entities; with max_pairs, the closest ones (characters between the two
    spans; relations are mostly stated between nearby mentions). -> (pairs in (head, tail) order, skipped)."""
    pairs = [(i, j) for i in range(len(entities)) for j in range(len(entities)) if i != j]
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs, 0

    def gap(p):
        a, b = entities[p[0]], entities[p[1]]
        return max(0, max(a["start"], b["start"]) - min(a["end"], b["end"]))

    kept = sorted(sorted(pairs, key=gap)[:max_pairs])
    return kept, len(pairs) - len(kept)


def extract(ner: str | Path | Artifact, relations: str | Path | Artifact, texts: Sequence[str],
            max_pairs: int | None = None, batch_size: int = 32) -> list[dict]:
    from .runtime import open_runner

    if not texts:
        raise ConfigError("Give at least one text to extract from.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"Text {bad[0]} is empty or not a string; extract reads non-empty plain texts.")
    if max_pairs is not None and max_pairs < 1:
        raise ConfigError(f"--max-pairs must be at least 1, not {max_pairs}.")
    ner_art, rel_art = _open(ner, NER_TASK, "--ner"), _open(relations, RELATION_TASK, "--relations")
    ner_task, rel_task = get_task(NER_TASK), get_task(RELATION_TASK)
    found = ner_task.predict(open_runner(ner_art), load_tokenizer(ner_art), list(texts), ner_art.labels,
                             ner_art.max_length, batch_size)
    results = [{"text": t, "entities": p.get("entities", []), "relations": [], "skipped_pairs": 0}
               for t, p in zip(texts, found)]
    rel_tok = load_tokenizer(rel_art)
    feats, owners = [], []  # owners[k]: (result index, head, tail) of feature k
    for n, res in enumerate(results):
        pairs, res["skipped_pairs"] = candidate_pairs(res["entities"], max_pairs)
        for i, j in pairs:
            a, b = res["entities"][i], res["entities"][j]
            pair = {"text": res["text"], "head": [a["start"], a["end"]], "tail": [b["start"], b["end"]]}
            try:
                f, _ = rel_task.encode([pair], rel_tok, rel_art.max_length)
            except RequestError:  # too far apart for the model's max_length, or a marker token in the text
                res["skipped_pairs"] += 1
                continue
            feats.extend(f)
            owners.append((n, i, j))
    if feats:
        rows = run_features(rel_task, open_runner(rel_art), feats, rel_tok.pad_token_id or 0, batch_size)
        labels = rel_task.decode_rows(rows, [None] * len(rows), dict(enumerate(rel_art.labels)))
        for (n, i, j), pred in zip(owners, labels):
            if not is_no_relation(pred["label"]):
                results[n]["relations"].append({"head": i, "tail": j, "label": pred["label"], "score": pred["score"]})
    return results
