"""Run the stages a pipeline YAML lists, in order, each feeding its artifact to the next.

    workdir: runs/demo          # each step writes <workdir>/<NN>-<stage> unless it says `output:`
    overwrite: true
    steps:
      - finetune: {model: minilm-l6, task: classification, data: sst2, max_train_samples: 2000}
      - eval: {data: sst2}
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .artifacts import Artifact
from .config import _read_file
from .errors import ConfigError
from .stages import parse_step

PIPELINE_KEYS = {"workdir", "overwrite", "steps", "input", "name"}


def run_pipeline(path: str | Path, console: Console | None = None) -> list[Artifact]:
    console = console or Console(stderr=True)
    spec = _read_file(path)
    unknown = set(spec) - PIPELINE_KEYS
    if unknown:
        raise ConfigError(f"Unknown key(s) in pipeline {path}: {', '.join(sorted(unknown))}. Valid: {', '.join(sorted(PIPELINE_KEYS))}.")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"Pipeline {path} needs a non-empty 'steps' list.")
    parsed = [parse_step(s, i) for i, s in enumerate(steps)]  # validate every step before running any
    workdir = Path(spec.get("workdir", Path(path).with_suffix("")))
    overwrite = bool(spec.get("overwrite", False))
    current = Artifact.open(spec["input"]) if spec.get("input") else None
    made: list[Artifact] = []
    for i, (stage, cfg, output) in enumerate(parsed):
        if stage.needs_parent and current is None:
            raise ConfigError(f"Pipeline step {i + 1} ({stage.name}) needs an input artifact: put a stage that makes one first, or set 'input:'.")
        out = Path(output) if output else workdir / f"{i + 1:02d}-{stage.name}"
        console.rule(f"[bold]step {i + 1}/{len(parsed)}: {stage.name}")
        current = stage.handler(current, cfg, out, overwrite)
        if stage.makes_artifact:
            made.append(current)
            console.print(f"[green]{stage.name}[/] -> {current.path}")
    return made
