"""Readers for the file layouts we accept. Each returns a list of row dicts (column -> value)
or, for CoNLL, (tokens, tags) pairs. Pure Python: no heavy imports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import DataError

csv.field_size_limit(10_000_000)


def read_delimited(path: Path, delimiter: str) -> list[dict]:
    # utf-8-sig + newline="" copes with BOMs and the CRLF files some datasets ship.
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        if reader.fieldnames is None:
            raise DataError(f"{path} is empty: it has no header row. Add a header naming the text and label columns.")
        rows = [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k} for r in reader]
    return rows


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n} is not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n} is a {type(row).__name__}, not a JSON object.")
            rows.append(row)
    return rows


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """CoNLL-2003 style: `token ... tag` per line (tag last), blank line between sentences."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            parts = line.split()
            if len(parts) < 2:
                raise DataError(f"{path} line {n}: expected 'token ... tag', got {line!r}.")
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences
