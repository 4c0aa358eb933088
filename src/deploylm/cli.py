"""The deploylm command line. Each command parses options and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import DeployLMError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Take a pretrained transformer to a fast, small, served, measured model.")
out = Console()
err = Console(stderr=True)


def _print_metrics(metrics: dict) -> None:
    for name, rec in metrics.items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if isinstance(v, float))
        out.print(f"  {name}: {shown}  (n={rec.get('samples', '?')})")


@app.command()
def models() -> None:
    """Known model aliases and where their files are."""
    from .models import known_models

    table = Table("alias", "description", "files")
    for row in known_models():
        table.add_row(row["alias"], row["description"], row["path"] or f"[yellow]not installed[/]: {row['install']}")
    out.print(table)


@app.command()
def finetune(
    data: Optional[str] = typer.Option(None, help="dataset dir, alias (sst2, conll2003, ...) or hf:NAME[:CONFIG]"),
    output: Path = typer.Option(..., help="artifact directory to create"),
    model: Optional[str] = typer.Option(None, help="alias (minilm-l6, mpnet-base), local HF dir or Hub id"),
    task: Optional[str] = typer.Option(None, help="classification | token-classification | relation-classification | multi"),
    heads: Optional[str] = typer.Option(None, help="--task multi: DATA:TASK,... (DATA an alias or NAME=DIRECTORY)"),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file with finetune options (flags win)"),
    max_train_samples: Optional[int] = typer.Option(None),
    max_eval_samples: Optional[int] = typer.Option(None),
    epochs: Optional[float] = typer.Option(None),
    learning_rate: Optional[float] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    max_length: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    eval_split: Optional[str] = typer.Option(None),
    overwrite: bool = typer.Option(False, help="replace an existing output directory"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
) -> None:
    """Fine-tune an encoder with a task head; writes an artifact with its dev metric."""
    from .config import FinetuneConfig, load_config
    from .train.finetune import finetune as run

    cfg = load_config(FinetuneConfig, config, data=data, model=model, task=task, heads=heads, max_train_samples=max_train_samples,
                      max_eval_samples=max_eval_samples, epochs=epochs, learning_rate=learning_rate,
                      batch_size=batch_size, max_length=max_length, seed=seed, text_column=text_column,
                      label_column=label_column, eval_split=eval_split)
    art = run(cfg, output, overwrite=overwrite, resume=resume)
    out.print(f"[green]fine-tuned[/] {cfg.model} for {cfg.task} -> [bold]{art.path}[/]")
    _print_metrics(art.metrics)


@app.command("eval")
def eval_(
    artifact: Path,
    data: str = typer.Option(..., help="dataset dir, alias or hf:NAME[:CONFIG]"),
    split: str = typer.Option("dev"),
    max_samples: Optional[int] = typer.Option(None),
    text_column: Optional[str] = typer.Option(None),
    label_column: Optional[str] = typer.Option(None),
    batch_size: int = typer.Option(64),
) -> None:
    """Task metric of ARTIFACT on a split; recorded in its manifest."""
    from .config import EvalConfig, load_config
    from .evaluation import evaluate

    cfg = load_config(EvalConfig, None, data=data, eval_split=split, max_eval_samples=max_samples,
                      text_column=text_column, label_column=label_column, batch_size=batch_size)
    rec = evaluate(artifact, cfg)
    _print_metrics({f"{data}:{split}": rec})



@app.command()
def predict(artifact: Path, texts: Optional[List[str]] = typer.Argument(None, help="one or more texts"),
            question: Optional[List[str]] = typer.Option(None, help="extractive-qa: a question (repeatable)"),
            context: Optional[str] = typer.Option(None, help="extractive-qa: the text the answers are in"),
            as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Label + score (classification), entity spans (NER), a sentence embedding for each text, or the answer
    to each --question in --context (extractive QA)."""
    from .artifacts import Artifact
    from .evaluation import predict as run
    from .tasks import task_for

    inputs = _predict_inputs(texts or [], question or [], context)
    art = Artifact.open(artifact)
    preds = run(art, inputs)
    if as_json:
        out.print_json(json.dumps(preds))
        return
    task = task_for(art)
    for item, p in zip(inputs, preds):
        out.print(task.show(item, p), highlight=False, markup=False)


def _predict_inputs(texts: list[str], questions: list[str], context: str | None) -> list:
    from .errors import ConfigError

    if questions or context is not None:
        if texts:
            raise ConfigError("Give either texts or --question/--context (extractive QA), not both.")
        if not questions or context is None:
            raise ConfigError("Extractive QA takes --question Q (one or more) and --context C (the text to answer "
                              "from); one of them is missing.")
        return [{"question": q, "context": context} for q in questions]
    return texts


@app.command()
def pipeline(file: Path) -> None:
    """Run the stages FILE lists, in order."""
    from .pipeline import run_pipeline

    made = run_pipeline(file, console=err)
    for art in made:
        out.print(f"{art.stage:>10}: {art.path}")
        _print_metrics(art.metrics)


@app.command()
def inspect(artifact: Path, as_json: bool = typer.Option(False, "--json"),
            verify: bool = typer.Option(True, help="check file checksums")) -> None:
    """Show an artifact's manifest: lineage, metrics, bench figures, files."""
    from .artifacts import Artifact

    art = Artifact.open(artifact, verify=verify)
    if as_json:
        out.print_json(json.dumps(art.manifest, default=str))
        return
    m = art.manifest
    out.print(f"[bold]{art.path}[/]  stage={art.stage} format={art.format} task={art.task} hash={art.hash[:12]}")
    out.print(f"labels: {art.labels}   max_length: {art.max_length}")
    for depth, parent in enumerate(art.lineage()):
        out.print(f"{'  ' * depth}<- {parent.get('stage', parent.get('kind', '?'))}: {parent.get('path')} ({str(parent.get('hash', ''))[:12]})")
    if art.metrics:
        out.print("metrics:")
        _print_metrics(art.metrics)
    if m.get("bench"):
        out.print("bench:")
        out.print_json(json.dumps(m["bench"], default=str))
    table = Table("file", "sha256", title="files (verified)" if verify else "files")
    for rel, digest in m.get("files", {}).items():
        table.add_row(rel, digest[:16])
    out.print(table)


# Commands of other parts of deploylm (optimise, serve, ...) register themselves here, each from
# its own module, so that cli.py does not grow with every capability.
PLUGIN_MODULES = ("deploylm.optimize.cli", "deploylm.serving.cli", "deploylm.bench.cli", "deploylm.models.cli",
                  "deploylm.generation.cli", "deploylm.extract_cli", "deploylm.report.cli",
                  "deploylm.compress.distill_cli", "deploylm.compress.prune_cli")


def _register_plugins() -> None:
    import importlib

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_plugins()


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", help="show library warnings and logs (default: "
                                                                      "written to a log file named at the end)")):
    if verbose:
        import os

        os.environ["DEPLOYLM_VERBOSE"] = "1"


def _command_name(argv: list[str]) -> str:
    names = [a for a in argv[1:] if not a.startswith("-")]
    return names[0] if names else "deploylm"


def main() -> None:
    from . import settings
    from .quiet import library_noise_to

    verbose = settings.verbose() or "--verbose" in sys.argv[1:2]
    path = None if verbose else settings.log_file(_command_name(sys.argv))
    try:
        with library_noise_to(path) as noise:
            try:
                app()
            finally:
                if noise[0]:
                    err.print(f"[dim]{noise[0]} library warnings/log lines written to {path} (--verbose shows them)[/]",
                              highlight=False)
    except DeployLMError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: no partial artifact was left; re-run with --resume where supported.")
        sys.exit(130)


if __name__ == "__main__":
    main()
