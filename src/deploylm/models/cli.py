"""`deploylm import`: parses options and calls models.importer.import_decoder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

SPEC_HELP = ("smollm2-135m | gemma3-270m | PATH.gguf | Hugging Face causal-LM directory | Hub id; with --task "
             "feature-extraction: minilm-l6 | mpnet-base | encoder directory | Hub id")


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


IMPORT_TASKS = ("text-generation", "feature-extraction")


def _import_other_task(task: str | None, spec: str, output: Path, overwrite: bool, chat_template, start: float) -> bool:
    """Handle a non-decoder --task; False: the decoder import runs. Every refusal comes before any loading."""
    from ..errors import ConfigError
    from ..tasks import get_task

    if task is None or task == "text-generation":
        return False
    get_task(task)  # an unknown task name: the registry's error lists the known ones
    if task not in IMPORT_TASKS:
        raise ConfigError(f"`deploylm import` makes {' or '.join(IMPORT_TASKS)} artifacts; {task} models are "
                          "fine-tuned: `deploylm finetune --task " + task + " --model MODEL ...`.")
    if chat_template is not None:
        raise ConfigError("--chat-template applies to decoders (text-generation), not to --task feature-extraction.")
    from rich.console import Console

    from .embedding_import import import_embedder

    art = import_embedder(spec, output, overwrite=overwrite)
    info = art.manifest["embedding"]
    Console().print(f"[green]imported[/] {spec} -> [bold]{art.path}[/] ({art.task}) in "
                    f"{time.perf_counter() - start:.0f} s, {_size_mb(art.path):.0f} MB")
    Console().print(f"  {info['architecture']}, {info['dimensions']} dimensions, {info['pooling']} pooling + "
                    f"{info['normalize']} normalisation, max length {art.max_length}; reload parity: max |d| "
                    f"{info['parity']['max_abs_diff']:.3g} on {info['parity']['texts']} texts")
    return True


def register(app: typer.Typer) -> None:
    from .importer import DEFAULT_MAX_CONTEXT

    @app.command("import")
    def import_model(
        spec: str = typer.Argument(..., help=SPEC_HELP),
        output: Path = typer.Option(..., help="artifact directory to create"),
        overwrite: bool = typer.Option(False, help="replace an existing output directory"),
        chat_template: Optional[Path] = typer.Option(None, help="Jinja chat template file (replaces the model's)"),
        max_context: int = typer.Option(DEFAULT_MAX_CONTEXT, help="cap on the context length the artifact records"),
        task: Optional[str] = typer.Option(None, help="text-generation (default: decoders) | feature-extraction "
                                                      "(sentence embeddings from an encoder such as minilm-l6)"),
    ) -> None:
        """Import a GPT-style decoder as an fp32 text-generation artifact that plain transformers loads, or (--task
        feature-extraction) an encoder as a sentence-embedding artifact."""
        from rich.console import Console

        from .importer import import_decoder

        start = time.perf_counter()
        if _import_other_task(task, spec, output, overwrite, chat_template, start):
            return
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
