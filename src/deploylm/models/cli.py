"""`deploylm import`: parses options and calls models.importer.import_decoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

SPEC_HELP = "smollm2-135m | gemma3-270m | PATH.gguf | Hugging Face causal-LM directory | Hub id"


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def register(app: typer.Typer) -> None:
    from .importer import DEFAULT_MAX_CONTEXT

    @app.command("import")
    def import_model(
        spec: str = typer.Argument(..., help=SPEC_HELP),
        output: Path = typer.Option(..., help="artifact directory to create"),
        overwrite: bool = typer.Option(False, help="replace an existing output directory"),
        chat_template: Optional[Path] = typer.Option(None, help="Jinja chat template file (replaces the model's)"),
        max_context: int = typer.Option(DEFAULT_MAX_CONTEXT, help="cap on the context length the artifact records"),
    ) -> None:
        """Import a GPT-style decoder as an fp32 text-generation artifact that plain transformers loads."""
        from rich.console import Console

        from .importer import import_decoder

        start = time.perf_counter()
        art = import_decoder(spec, output, overwrite=overwrite, chat_template=chat_template, max_context=max_context)
        info, out = art.manifest["decoder"], Console()
        out.print(f"[green]imported[/] {spec} -> [bold]{art.path}[/] in {time.perf_counter() - start:.0f} s, "
                  f"{_size_mb(art.path):.0f} MB")
        chat = f"yes ({info['chat_template_source']})" if info["chat_template"] else "no (use /v1/completions)"
        out.print(f"  {info['architecture']}, {info['params'] / 1e6:.1f}M params, context {info['max_context']} "
                  f"(model: {info['context_length']}), eos {info['eos_token_ids']}, chat template: {chat}")
        out.print(f"  parity: max |dlogit| {info['parity']['max_abs_logit_diff']:.3g} on "
                  f"{info['parity']['prompt_tokens']} tokens; tokenizer identical on "
                  f"{info['parity']['tokenizer_texts']} texts")
