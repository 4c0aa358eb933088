"""`deploylm extract`: parses options and calls extract.extract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def read_lines(path: Path) -> list[str]:
    from .errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"--input {path} does not exist; give a text file with one text per line.")
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    return [l for l in lines if l]


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        texts: Optional[List[str]] = typer.Argument(None, help="texts to read (or --input FILE)"),
        ner: Path = typer.Option(..., help="token-classification (NER) artifact: finds the entities"),
        relations: Path = typer.Option(..., help="relation-classification artifact: labels each pair of them"),
        input: Optional[Path] = typer.Option(None, "--input", help="file with one text per line"),
        max_pairs: Optional[int] = typer.Option(None, help="per text, classify only the N closest entity pairs"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per text (JSON lines)"),
    ) -> None:
        """Entities (NER) and the relations between them, per text."""
        from rich.console import Console

        from .errors import ConfigError
        from .extract import extract as run

        if texts and input is not None:
            raise ConfigError("Give texts as arguments or --input FILE, not both.")
        items = read_lines(input) if input is not None else list(texts or [])
        results = run(ner, relations, items, max_pairs=max_pairs)
        if as_json:  # plain print: JSON lines must not be wrapped or coloured
            for r in results:
                print(json.dumps(r, ensure_ascii=False))
            return
        out = Console()
        for r in results:
            out.print(r["text"], highlight=False)
            ents = r["entities"]
            out.print("  entities: " + (", ".join(f"{e['text']} [{e['entity']}]" for e in ents) or "none"),
                      highlight=False)
            for rel in r["relations"]:
                out.print(f"  {ents[rel['head']]['text']} --{rel['label']}--> {ents[rel['tail']]['text']} "
                          f"({rel['score']:.2f})", highlight=False)
            if r["skipped_pairs"]:
                out.print(f"  ({r['skipped_pairs']} entity pairs not classified: --max-pairs or too far apart)",
                          highlight=False)
