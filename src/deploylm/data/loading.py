"""Find a dataset from what the user passed as --data and turn it into task examples.

Accepted: a directory in a known layout (SST-2/GLUE TSV, CoNLL, CSV, JSONL), a dataset alias
(sst2, conll2003, rt_polarity, ag_news: looked up in DEPLOYLM_DATA_DIR, else fetched from the Hub),
or hf:NAME[:CONFIG] through the `datasets` library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..errors import DataError
from .formats import read_conll, read_delimited, read_jsonl
from .squad import load_squad_directory, squad_files, squad_from_hub
from .relations import (find_semeval, is_relation_hub, is_relation_rows, load_relation_hub, load_semeval_dir,
                        relation_dataset)

# Different datasets name the same split differently; the first file found wins.
SPLIT_ALIASES = {
    "train": ["train", "eng.train"],
    "dev": ["dev", "validation", "valid", "val", "eng.testa"],
    "test": ["test", "test-labeled", "eng.testb"],
}

# alias -> (local folder name, task, Hub id, Hub config, label names by raw label)
DATASET_ALIASES = {
    "sst2": ("sst2", "classification", "nyu-mll/glue", "sst2", {"0": "negative", "1": "positive"}),
    "rt_polarity": ("rt_polarity", "classification", "cornell-movie-review-data/rotten_tomatoes", None,
                    {"0": "negative", "1": "positive"}),
    "ag_news": ("ag_news", "classification", "fancyzhx/ag_news", None,
                {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}),
    "conll2003": ("conll2003", "token-classification", "eriktks/conll2003", None, {}),
    "squad_v1.1": ("squad_v1.1", "extractive-qa", "rajpurkar/squad", None, {}),
}

# Datasets whose local copy has only a labelled test split (AG News here: test.csv, 7,600 rows): it is split,
# seeded, into train and a held-out dev; the dev share gives 6,000 / 1,600 on AG News' 7,600.
SPLIT_FROM_TEST = {"ag_news": 1600 / 7600}
SPLIT_SEED = 0  # fixed, not --seed: every model trained on the dataset (single- or multi-task) gets the same split

TEXT_COLUMNS = ("sentence", "text", "content", "review", "description")
LABEL_COLUMNS = ("label", "labels", "class", "sentiment")


@dataclass
class Examples:
    """One split. classification: inputs are strings, targets label names.
    token-classification: inputs are token lists, targets tag lists.
    relation-classification: inputs are {"text", "head": [s, e], "tail": [s, e]} dicts, targets label names."""

    inputs: list
    targets: list | None

    def __len__(self) -> int:
        return len(self.inputs)

    def head(self, n: int | None) -> "Examples":
        if n is None or n >= len(self):
            return self
        return Examples(self.inputs[:n], None if self.targets is None else self.targets[:n])


@dataclass
class TaskDataset:
    name: str
    task: str
    source: str
    splits: dict[str, Examples] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # recorded in a trained artifact's manifest (e.g. how splits were made)

    def split(self, name: str) -> Examples:
        if name not in self.splits:
            raise DataError(
                f"Dataset {self.source} has no '{name}' split. Available: {', '.join(sorted(self.splits)) or 'none'}."
            )
        ex = self.splits[name]
        if len(ex) == 0:
            raise DataError(f"Split '{name}' of {self.source} is empty. Point --data at a dataset with examples.")
        return ex


def _find_split_file(root: Path, split: str, exts: tuple[str, ...]) -> Path | None:
    for stem in SPLIT_ALIASES.get(split, [split]):
        for ext in exts:
            p = root / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _pick_column(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise DataError(
                f"{path} has no column '{wanted}' (given as the {what} column). Its columns are: {', '.join(columns)}."
            )
        return wanted
    for c in defaults:
        if c in columns:
            return c
    raise DataError(
        f"Cannot tell which column of {path} holds the {what}: columns are {', '.join(columns)}. "
        f"Pass --{what}-column NAME."
    )


def _rows_to_examples(rows: list[dict], path: Path, text_col: str | None, label_col: str | None,
                      label_names: dict) -> Examples:
    if not rows:
        return Examples([], [])
    columns = list(rows[0].keys())
    tcol = _pick_column(columns, text_col, TEXT_COLUMNS, "text", path)
    try:
        lcol = _pick_column(columns, label_col, LABEL_COLUMNS, "label", path)
    except DataError:
        if label_col:
            raise
        lcol = None  # unlabelled split (e.g. GLUE test): fine for predict, refused for train/eval
    inputs, targets = [], []
    for n, row in enumerate(rows, 2):
        text = row.get(tcol)
        if text is None or (isinstance(text, str) and not text.strip()):
            raise DataError(f"{path} row {n}: the text column '{tcol}' is empty.")
        inputs.append(str(text))
        if lcol is not None:
            raw = row.get(lcol)
            if raw is None or str(raw).strip() == "":
                raise DataError(f"{path} row {n}: the label column '{lcol}' is empty.")
            raw = str(raw).strip()
            targets.append(label_names.get(raw, raw))
    return Examples(inputs, targets if lcol is not None else None)


def _load_directory(root: Path, name: str, text_col, label_col, label_names) -> TaskDataset:
    if squad_files(root):
        return load_squad_directory(root, name)
    if _find_split_file(root, "train", ("",)) or any(root.glob("*.conll")):
        ds = TaskDataset(name, "token-classification", str(root))
        for split in SPLIT_ALIASES:
            p = _find_split_file(root, split, ("", ".conll"))
            if p:
                pairs = read_conll(p)
                ds.splits[split] = Examples([t for t, _ in pairs], [g for _, g in pairs])
        return ds
    if find_semeval(root):
        return load_semeval_dir(root, name, find_semeval(root))
    readers = ((".tsv", lambda p: read_delimited(p, "\t")), (".csv", lambda p: read_delimited(p, ",")),
               (".jsonl", read_jsonl))
    for ext, reader in readers:
        found = {s: _find_split_file(root, s, (ext,)) for s in SPLIT_ALIASES}
        found = {s: p for s, p in found.items() if p}
        if found:
            rows = {s: reader(p) for s, p in found.items()}
            if ext == ".jsonl" and any(is_relation_rows(r) for r in rows.values()):
                return relation_dataset(name, root, rows, found)
            ds = TaskDataset(name, "classification", str(root))
            for split, p in found.items():
                ds.splits[split] = _rows_to_examples(rows[split], p, text_col, label_col, label_names)
            return split_test_only(ds) if root.name in SPLIT_FROM_TEST or name in SPLIT_FROM_TEST else ds
    files = ", ".join(sorted(x.name for x in root.iterdir())[:10]) or "nothing"
    raise DataError(
        f"{root} is not in a layout deploylm knows. It holds: {files}. Expected train/dev/test files as .tsv, .csv or "
        ".jsonl (text + label columns, or text/head/tail/label relations), CoNLL files (eng.train/eng.testa/eng.testb "
        "or *.conll), SemEval-2010 Task 8's TRAIN_FILE.TXT/TEST_FILE_FULL.TXT, or SQuAD-format JSON "
        "(train-v1.1.json/dev-v1.1.json)."
    )


def split_test_only(ds: TaskDataset) -> TaskDataset:
    """A dataset with a labelled test split and no train split -> seeded train / dev from the test rows (the test
    split is dropped: its rows are now in train or dev). The split is recorded in ds.info (the manifest)."""
    test = ds.splits.get("test")
    if "train" in ds.splits or test is None or test.targets is None:
        return ds
    import random

    order = list(range(len(test)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_dev = round(len(order) * SPLIT_FROM_TEST.get(ds.name, SPLIT_FROM_TEST["ag_news"]))
    dev_idx, train_idx = sorted(order[:n_dev]), sorted(order[n_dev:])
    pick = lambda idx: Examples([test.inputs[i] for i in idx], [test.targets[i] for i in idx])  # noqa: E731
    splits = {"train": pick(train_idx), "dev": pick(dev_idx)}
    info = {"derived_splits": {"from": "test", "seed": SPLIT_SEED, "method": "random.Random(seed).shuffle of the "
                               "test rows; the first n_dev are dev (in file order), the rest train",
                               "rows": len(test), "train": len(train_idx), "dev": len(dev_idx)}}
    return TaskDataset(ds.name, ds.task, ds.source, splits, {**ds.info, **info})


def _load_hub(hub_id: str, config: str | None, name: str, text_col, label_col, label_names) -> TaskDataset:
    if settings.hub_offline():
        raise DataError(
            f"Dataset '{name}' is not available locally and the Hugging Face Hub is offline. Set DEPLOYLM_DATA_DIR to "
            "the folder that holds it (e.g. ../shared/data) or pass --data with a local directory."
        )
    import datasets

    try:
        dd = datasets.load_dataset(hub_id, config)
    except Exception as exc:  # network errors come in many types; all mean "not reachable"
        raise DataError(
            f"Could not load dataset '{hub_id}' from the Hugging Face Hub ({type(exc).__name__}: {str(exc)[:200]}). "
            "Set DEPLOYLM_DATA_DIR to a folder with a local copy or pass --data with a local directory."
        ) from None
    first = next(iter(dd.values()))
    columns = list(first.column_names)
    if {"question", "context", "answers"} <= set(columns):
        return squad_from_hub(dd, name, hub_id)
    if is_relation_hub(columns):
        return load_relation_hub(dd, hub_id, name)
    if "tokens" in columns and any(c.endswith("tags") for c in columns):
        tag_col = label_col or ("ner_tags" if "ner_tags" in columns else next(c for c in columns if c.endswith("tags")))
        names = first.features[tag_col].feature.names
        ds = TaskDataset(name, "token-classification", f"hf:{hub_id}")
        for split, part in dd.items():
            key = "dev" if split == "validation" else split
            ds.splits[key] = Examples(list(part["tokens"]), [[names[i] for i in tags] for tags in part[tag_col]])
        return ds
    ds = TaskDataset(name, "classification", f"hf:{hub_id}")
    for split, part in dd.items():
        key = "dev" if split == "validation" else split
        feats = part.features
        lc = label_col or next((c for c in LABEL_COLUMNS if c in part.column_names), None)
        names = dict(label_names)
        if lc and hasattr(feats.get(lc), "names"):
            names.update({str(i): n for i, n in enumerate(feats[lc].names)})
        rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in part]
        for r in rows:  # GLUE marks unlabelled test rows with -1
            if lc and str(r.get(lc)) == "-1":
                r.pop(lc)
        if rows and lc and lc not in rows[0]:
            ds.splits[key] = Examples([str(r[_pick_column(list(r), text_col, TEXT_COLUMNS, "text", Path(hub_id))]) for r in rows], None)
            continue
        ds.splits[key] = _rows_to_examples(rows, Path(f"hf:{hub_id}/{split}"), text_col, label_col, names)
    return ds


def load_dataset(data: str, text_column: str | None = None, label_column: str | None = None) -> TaskDataset:
    if not data or not str(data).strip():
        raise DataError("No dataset given. Pass --data with a directory, a dataset alias or hf:NAME[:CONFIG].")
    data = str(data)
    if data.startswith("hf:"):
        parts = data[3:].split(":")
        if not parts[0]:
            raise DataError(f"'{data}' names no dataset. Use hf:NAME or hf:NAME:CONFIG, e.g. hf:nyu-mll/glue:sst2.")
        return _load_hub(parts[0], parts[1] if len(parts) > 1 else None, parts[0], text_column, label_column, {})
    path = Path(data).expanduser()
    alias = DATASET_ALIASES.get(data) or DATASET_ALIASES.get(path.name)
    label_names = alias[4] if alias else {}
    if path.is_dir():
        return _load_directory(path, path.name, text_column, label_column, label_names)
    if path.exists():
        raise DataError(f"{path} is a file; --data takes a directory holding train/dev/test files, an alias or hf:NAME.")
    if data in DATASET_ALIASES:
        folder, _task, hub_id, hub_cfg, names = DATASET_ALIASES[data]
        root = settings.data_dir()
        if root and (root / folder).is_dir():
            return _load_directory(root / folder, data, text_column, label_column, names)
        return _load_hub(hub_id, hub_cfg, data, text_column, label_column, names)
    raise DataError(
        f"Dataset '{data}' does not exist: it is not a directory, nor one of the aliases "
        f"({', '.join(DATASET_ALIASES)}), nor hf:NAME[:CONFIG]."
    )
