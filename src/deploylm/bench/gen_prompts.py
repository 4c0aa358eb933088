"""The prompts every generation benchmark system gets: fixed slices of SQuAD v1.1 dev contexts (Wikipedia
paragraphs), cut to about `prompt_len_tokens` tokens of the benchmark model's tokenizer. Texts, not ids:
each system tokenizes them itself and reports its own prompt token counts.

    python -m deploylm.bench.gen_prompts --tokenizer DIR --n 16 --prompt-len 128 > prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable


def squad_contexts(squad_path: Path | None = None) -> list[str]:
    """Round-robin over the articles (paragraph 0 of every article, then paragraph 1, ...), so a few
    prompts already span many topics; the order is the file's, so the slice is fixed."""
    if squad_path is None:
        from deploylm import settings
        from deploylm.errors import DataError

        root = settings.data_dir()
        if root is None:
            raise DataError("No datasets folder: set DEPLOYLM_DATA_DIR to the folder holding squad_v1.1/.")
        squad_path = root / "squad_v1.1" / "dev-v1.1.json"
    articles = json.loads(Path(squad_path).read_text(encoding="utf-8"))["data"]
    paragraphs = [[p["context"] for p in a["paragraphs"]] for a in articles]
    out = []
    for depth in range(max(len(p) for p in paragraphs)):
        out.extend(p[depth] for p in paragraphs if depth < len(p))
    return out


def _cut(text: str, tokenizer, n_tokens: int) -> str | None:
    """The text of the first n_tokens tokens, cut at a token boundary of the original string (so nothing is
    re-encoded through decode), or None when the paragraph is shorter."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) < n_tokens:
        return None
    return text[: offsets[n_tokens - 1][1]].strip()


def benchmark_prompts(n: int, prompt_len_tokens: int, tokenizer, squad_path: Path | None = None) -> list[str]:
    """n prompt texts of about prompt_len_tokens tokens each (exactly that many with `tokenizer` unless BPE
    merges differently at the cut); a fast (offset-mapping) HF tokenizer is required."""
    if n < 1 or prompt_len_tokens < 1:
        raise ValueError(f"n and prompt_len_tokens must be >= 1 (got {n}, {prompt_len_tokens})")
    prompts = []
    for context in squad_contexts(squad_path):
        cut = _cut(context, tokenizer, prompt_len_tokens)
        if cut:
            prompts.append(cut)
            if len(prompts) == n:
                return prompts
    raise ValueError(f"only {len(prompts)} SQuAD contexts have {prompt_len_tokens} tokens; asked for {n}")


def level_slices(levels: list[int], requests: int | Callable[[int], int]) -> tuple[list[tuple[int, slice]], int]:
    """Each load level's own prompts: (concurrency, slice of the prompt list) per level, and how many prompts that
    takes, plus one more at the end for the warm-up. The engine's prefix cache would otherwise serve a prompt an
    earlier level or the warm-up already ran, and the level would time a cache hit instead of a prefill.
    `requests`: requests each stream sends, or a function from a level's concurrency to its total requests."""
    count = requests if callable(requests) else (lambda c: c * requests)
    out, start = [], 0
    for c in levels:
        n = count(c)
        out.append((c, slice(start, start + n)))
        start += n
    return out, start + 1


def write_jsonl(prompts: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="HF model/tokenizer directory")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--squad", type=Path, default=None, help="dev-v1.1.json (default: the datasets folder)")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    for p in benchmark_prompts(args.n, args.prompt_len, tok, args.squad):
        sys.stdout.write(json.dumps({"text": p}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
