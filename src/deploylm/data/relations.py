"""Relation data: two entity spans in a text and the relation between them.

Two layouts on disk and one on the Hub, all read into the same example: {"text", "head": [s, e],
"tail": [s, e]} (character offsets, end exclusive) with a label string.
- JSONL: one {"text", "head", "tail", "label"} object per line, in train/dev/test .jsonl files.
- SemEval-2010 Task 8's own files (TRAIN_FILE.TXT, TEST_FILE_FULL.TXT): `N<TAB>"sentence with <e1>..</e1> and
  <e2>..</e2>"`, then the label line, then `Comment:`, then a blank line.
- hf:SemEvalWorkshop/sem_eval_2010_task_8: columns `sentence` (tagged the same way) and `relation` (ClassLabel).
Pure Python: no heavy imports (the tasks module reuses the span checks and the tag parser)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError

# The original distribution's file names; the first found per split wins.
SEMEVAL_FILES = {"train": ("TRAIN_FILE.TXT", "TRAIN_FILE.txt"),
                 "test": ("TEST_FILE_FULL.TXT", "TEST_FILE_FULL.txt")}
_TAG = re.compile(r"</?e[12]>")
_NUMBERED = re.compile(r'^(\d+)\t"(.*)"\s*$')


def span_problem(text: object, head: object, tail: object) -> str | None:
    """What is wrong with two [start, end) character spans of text, or None. Said so the user can fix it."""
    if not isinstance(text, str) or not text:
        return "'text' must be a non-empty string"
    for name, span in (("head", head), ("tail", tail)):
        if (not isinstance(span, (list, tuple)) or len(span) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            return f"'{name}' must be [start, end] (two integers, character offsets, end exclusive), got {span!r}"
        s, e = span
        if not 0 <= s < e <= len(text):
            return (f"'{name}' span [{s}, {e}] is not a non-empty range inside the text (0 <= start < end <= "
                    f"{len(text)}, the text's length)")
    if head[0] < tail[1] and tail[0] < head[1]:
        return (f"the head span {list(head)} and tail span {list(tail)} overlap; a relation joins two distinct, "
                "non-overlapping entities")
    return None


def parse_tagged(sentence: str) -> dict | None:
    """'<e1>Paris</e1> is in <e2>France</e2>' -> {"text": "Paris is in France", "head": [0, 5],
    "tail": [12, 18]}; None when the sentence has no entity tag at all. Raises ValueError (the message says what
    is wrong) for tags that are missing, repeated, unclosed, nested or empty."""
    tags = [(m.group(), m.start(), m.end()) for m in _TAG.finditer(sentence)]
    if not tags:
        return None
    names = [t for t, _, _ in tags]
    if sorted(names) != sorted(["<e1>", "</e1>", "<e2>", "</e2>"]):
        raise ValueError(f"needs exactly one <e1>...</e1> and one <e2>...</e2>; found the tags {names}")
    text, spans, removed, opened = [], {}, 0, None
    last = 0
    for tag, start, end in tags:
        text.append(sentence[last:start])
        pos = start - removed
        removed += end - start
        last = end
        if not tag.startswith("</"):
            if opened is not None:
                raise ValueError(f"{tag} opens inside {opened}; entity tags must not nest or overlap")
            opened, spans[tag[1:3]] = tag, [pos, None]
        else:
            if opened != "<" + tag[2:]:
                raise ValueError(f"{tag} closes no open {'<' + tag[2:]}")
            spans[tag[2:4]][1], opened = pos, None
    text.append(sentence[last:])
    out = {"text": "".join(text), "head": spans["e1"], "tail": spans["e2"]}
    if any(s == e for s, e in spans.values()):
        raise ValueError("an entity tag pair encloses no text")
    return out


def check_row(row: dict, where: str) -> dict:
    """A JSONL row -> the example input, or DataError naming where and what to fix."""
    missing = [k for k in ("text", "head", "tail", "label") if k not in row]
    if missing:
        raise DataError(f"{where} lacks {', '.join(repr(k) for k in missing)}. Each line must be "
                        '{"text": ..., "head": [start, end], "tail": [start, end], "label": ...}.')
    problem = span_problem(row["text"], row["head"], row["tail"])
    if problem:
        raise DataError(f"{where}: {problem}. Fix the offsets (characters of 'text', end exclusive).")
    label = row["label"]
    if not isinstance(label, (str, int)) or isinstance(label, bool) or str(label).strip() == "":
        raise DataError(f"{where}: 'label' must be a non-empty string, got {label!r}.")
    return {"text": row["text"], "head": list(row["head"]), "tail": list(row["tail"])}


def is_relation_rows(rows: list[dict]) -> bool:
    """Whether JSONL rows are relation examples (they carry head and tail spans)."""
    return bool(rows) and "head" in rows[0] and "tail" in rows[0]


def relation_examples(rows: list[dict], path: Path):
    """Validated JSONL rows -> Examples (inputs: span dicts, targets: label strings)."""
    from .loading import Examples

    inputs = [check_row(r, f"{path} line {n}") for n, r in enumerate(rows, 1)]
    return Examples(inputs, [str(r["label"]).strip() for r in rows])


def read_semeval(path: Path):
    """SemEval-2010 Task 8's TRAIN_FILE.TXT / TEST_FILE_FULL.TXT -> Examples."""
    from .loading import Examples

    lines = path.read_text(encoding="utf-8-sig").splitlines()
    inputs, targets, n = [], [], 0
    while n < len(lines):
        if not lines[n].strip():
            n += 1
            continue
        m = _NUMBERED.match(lines[n].strip("\r"))
        if not m:
            raise DataError(f"{path} line {n + 1}: expected 'NUMBER<TAB>\"sentence with <e1>..</e1> and <e2>..</e2>\"', "
                            f"got {lines[n][:80]!r}. Is this SemEval-2010 Task 8's TRAIN_FILE.TXT/TEST_FILE_FULL.TXT?")
        label = lines[n + 1].strip() if n + 1 < len(lines) else ""
        if not label or label.startswith("Comment") or _NUMBERED.match(label):
            raise DataError(f"{path} line {n + 2}: expected the relation label (e.g. Cause-Effect(e1,e2) or Other) "
                            f"after sentence {m.group(1)}.")
        try:
            parsed = parse_tagged(m.group(2))
        except ValueError as exc:
            raise DataError(f"{path} line {n + 1} (sentence {m.group(1)}): {exc}.") from None
        if parsed is None:
            raise DataError(f"{path} line {n + 1} (sentence {m.group(1)}) has no <e1>/<e2> tags.")
        inputs.append(parsed)
        targets.append(label)
        n += 2
        if n < len(lines) and lines[n].startswith("Comment"):
            n += 1
    return Examples(inputs, targets)


def find_semeval(root: Path) -> dict[str, Path]:
    """The SemEval-2010 Task 8 files in root, by split (empty when root is not that layout)."""
    found = {}
    for split, names in SEMEVAL_FILES.items():
        for name in names:
            if (root / name).is_file():
                found[split] = root / name
                break
    return found


def relation_dataset(name: str, root: Path, rows: dict[str, list[dict]], paths: dict[str, Path]):
    """JSONL splits already read (split -> rows) -> a relation-classification TaskDataset."""
    from .loading import TaskDataset

    ds = TaskDataset(name, "relation-classification", str(root))
    for split, split_rows in rows.items():
        ds.splits[split] = relation_examples(split_rows, paths[split])
    return ds


def load_semeval_dir(root: Path, name: str, files: dict[str, Path]):
    from .loading import TaskDataset

    ds = TaskDataset(name, "relation-classification", str(root))
    for split, p in files.items():
        ds.splits[split] = read_semeval(p)
    return ds


def is_relation_hub(columns: list[str]) -> bool:
    return "sentence" in columns and "relation" in columns


def load_relation_hub(dd, hub_id: str, name: str):
    """A `datasets` DatasetDict with SemEval's columns (sentence, relation ClassLabel) -> TaskDataset."""
    from .loading import Examples, TaskDataset

    ds = TaskDataset(name, "relation-classification", f"hf:{hub_id}")
    for split, part in dd.items():
        feat = part.features["relation"]
        names = getattr(feat, "names", None)
        inputs, targets = [], []
        for i, (sentence, rel) in enumerate(zip(part["sentence"], part["relation"])):
            try:
                parsed = parse_tagged(sentence)
            except ValueError as exc:
                raise DataError(f"hf:{hub_id} split {split} row {i}: {exc}.") from None
            if parsed is None:
                raise DataError(f"hf:{hub_id} split {split} row {i} has no <e1>/<e2> tags in 'sentence'.")
            inputs.append(parsed)
            targets.append(names[rel] if names else str(rel))
        ds.splits["dev" if split == "validation" else split] = Examples(inputs, targets)
    return ds
