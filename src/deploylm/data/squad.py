"""SQuAD-format question answering data (v1.1 JSON, or the Hub's flat rows) -> extractive-QA examples.

An example's input is {"id", "question", "context"}; its target {"text": [...], "answer_start": [...]}
(several reference answers on dev sets). The shared copy holds only SQuAD's dev file: a directory with
no train file is split by article (questions about one article never straddle two splits), seeded, and
the split is recorded so the manifest can say which articles trained the model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import DataError

TASK = "extractive-qa"
# File stem -> split. SQuAD's own names first, then plain ones.
SPLIT_FILES = {"train-v1.1": "train", "dev-v1.1": "dev", "train": "train", "dev": "dev", "validation": "dev",
               "test": "test"}
# A dev-only directory: articles shuffled with SPLIT_SEED, the first TRAIN_ARTICLES train, the next
# DEV_ARTICLES are the dev split (checkpoint selection), the rest the held-out test split.
SPLIT_SEED = 0
TRAIN_ARTICLES = 24
DEV_ARTICLES = 4


def squad_files(root: Path) -> dict[str, Path]:
    """split -> SQuAD JSON file in `root` (files whose top level is {"data": [articles]})."""
    found: dict[str, Path] = {}
    for stem, split in SPLIT_FILES.items():
        p = root / f"{stem}.json"
        if p.is_file() and split not in found and _looks_like_squad(p):
            found[split] = p
    return found


def _looks_like_squad(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096)
    return head.lstrip().startswith("{") and '"data"' in head and ('"paragraphs"' in head or '"title"' in head)


def read_articles(path: Path) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}). Expected SQuAD's format: "
                        '{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}.') from None
    articles = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(articles, list) or not articles:
        raise DataError(f"{path} has no 'data' list of articles; it is not a SQuAD-format file.")
    return articles


def examples_from_articles(articles: list[dict], source: str, numbers: list[int] | None = None):
    """`numbers`: each article's index in its file (for messages), when `articles` is a part of it."""
    from .loading import Examples

    inputs, targets = [], []
    for a, article in zip(numbers or range(len(articles)), articles):
        for p, para in enumerate(article.get("paragraphs") or []):
            context = para.get("context")
            for q, qa in enumerate(para.get("qas") or []):
                where = f"{source}: article {a} ({article.get('title', '?')!r}), paragraph {p}, question {q}"
                inputs.append(check_example(qa.get("question"), context, where, qa.get("id")))
                answers = qa.get("answers") or []
                targets.append(check_answers([a.get("text") for a in answers],
                                             [a.get("answer_start") for a in answers], context, where))
    return Examples(inputs, targets)


def check_example(question, context, where: str, qid=None) -> dict:
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: the question is missing or empty.")
    if not isinstance(context, str) or not context.strip():
        raise DataError(f"{where}: the context is missing or empty; extractive QA finds answers in a context.")
    return {"id": str(qid) if qid is not None else where, "question": question, "context": context}


def check_answers(texts: list, starts: list, context: str, where: str) -> dict:
    """Every answer must be the context's text at its answer_start: a span outside the context, or one that
    does not match it, would train the model on a wrong target."""
    if not texts:
        raise DataError(f"{where}: no answers. SQuAD v1.1 questions have at least one answer span.")
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text or not isinstance(start, int) or start < 0:
            raise DataError(f"{where}: an answer needs a non-empty 'text' and an integer 'answer_start' >= 0; "
                            f"got text={text!r}, answer_start={start!r}.")
        if start + len(text) > len(context):
            raise DataError(f"{where}: the answer {text!r} at {start} ends at {start + len(text)}, past the end of "
                            f"the context ({len(context)} characters). Fix answer_start.")
        if context[start:start + len(text)] != text:
            raise DataError(f"{where}: the context at {start} reads {context[start:start + len(text)]!r}, not the "
                            f"answer {text!r}. Fix answer_start (character offset into the context).")
    return {"text": list(texts), "answer_start": list(starts)}


def article_split(articles: list[dict], seed: int = SPLIT_SEED) -> tuple[dict[str, list[int]], dict]:
    """split -> indices of its articles (ascending), and the record of the split."""
    if len(articles) < TRAIN_ARTICLES + DEV_ARTICLES + 1:
        raise DataError(f"Only {len(articles)} articles: splitting by article needs more than "
                        f"{TRAIN_ARTICLES + DEV_ARTICLES}. Provide a train file (train-v1.1.json) beside the dev file.")
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    parts = {"train": order[:TRAIN_ARTICLES], "dev": order[TRAIN_ARTICLES:TRAIN_ARTICLES + DEV_ARTICLES],
             "test": order[TRAIN_ARTICLES + DEV_ARTICLES:]}
    info = {"by": "article", "seed": seed,
            **{f"{k}_articles": [articles[i].get("title", str(i)) for i in sorted(v)] for k, v in parts.items()}}
    return {k: sorted(v) for k, v in parts.items()}, info


def load_squad_directory(root: Path, name: str):
    from .loading import TaskDataset

    files = squad_files(root)
    ds = TaskDataset(name, TASK, str(root))
    if "train" in files:
        for split, path in files.items():
            ds.splits[split] = examples_from_articles(read_articles(path), str(path))
        return ds
    path = files.get("dev") or files.get("test")
    if path is None:
        raise DataError(f"{root} has no SQuAD JSON file (train-v1.1.json / dev-v1.1.json).")
    articles = read_articles(path)
    parts, info = article_split(articles)
    ds.info = {"data_split": {**info, "file": path.name}}
    for split, numbers in parts.items():
        ds.splits[split] = examples_from_articles([articles[i] for i in numbers], str(path), numbers)
    return ds


def squad_from_hub(dd, name: str, hub_id: str):
    """The Hub's SQuAD rows (id, title, context, question, answers{text, answer_start})."""
    from .loading import Examples, TaskDataset

    ds = TaskDataset(name, TASK, f"hf:{hub_id}")
    for split, part in dd.items():
        inputs, targets = [], []
        for n, row in enumerate(part):
            where = f"hf:{hub_id}/{split} row {n}"
            inputs.append(check_example(row.get("question"), row.get("context"), where, row.get("id")))
            answers = row.get("answers") or {}
            targets.append(check_answers(list(answers.get("text") or []), list(answers.get("answer_start") or []),
                                         row["context"], where))
        ds.splits["dev" if split == "validation" else split] = Examples(inputs, targets)
    return ds
