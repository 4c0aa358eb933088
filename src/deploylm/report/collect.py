"""Find the artifacts under a run directory and keep the ones one report can compare.

Choices (issue 12 leaves them open):
- decoders (text-generation) and tasks without a single dev metric (feature-extraction, multi) are skipped
  with a note: their figures (perplexity, tokens/s, cosine parity) do not go on a metric-vs-throughput plot
  with encoders; `deploylm bench` measures them;
- artifacts of different tasks are refused (ConfigError): one report is one decision, and a sentiment model
  and a NER model are not alternatives to each other. Point RUN_DIR at the folder of one task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import MANIFEST, Artifact
from ..errors import ConfigError
from ..tasks import get_task


def find_artifacts(run_dir: Path) -> list[Path]:
    """Every directory under run_dir holding a manifest.json, sorted. Hidden directories are skipped: they are
    deploylm's work in progress or leftovers (`.NAME.checkpoints`, `.NAME.tmp-*`, `.NAME.old-*`), never an
    artifact."""
    found = []
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST in files:
            found.append(Path(root))
    return sorted(found)


@dataclass
class Collection:
    task: str
    metric_name: str
    artifacts: list[Artifact]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}


def _skip_reason(art: Artifact) -> str | None:
    if art.task == "text-generation":
        return "decoder (text-generation): measured by `deploylm bench` / generation benchmarks, not on this plot"
    if get_task(art.task).primary_metric is None:
        return f"task {art.task} has no single dev metric to plot against throughput"
    return None


def collect(run_dir: str | Path) -> Collection:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"Run directory {run_dir} does not exist (or is not a directory). Pass the folder your "
                          "stages wrote their artifacts into, e.g. runs/sst2.")
    paths = find_artifacts(run_dir)
    if not paths:
        raise ConfigError(f"{run_dir} holds no artifacts (no directory under it has a {MANIFEST}). Pass the folder "
                          "your finetune/distill/prune/quantize --output directories are in.")
    kept, skipped = [], []
    for path in paths:
        art = Artifact.open(path)  # checksums checked: a damaged artifact is an error, not a row
        reason = _skip_reason(art)
        if reason:
            skipped.append({"path": str(path), "reason": reason})
        else:
            kept.append(art)
    if not kept:
        notes = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped)
        raise ConfigError(f"{run_dir} holds no artifact the report can compare ({notes}).")
    tasks: dict[str, list[str]] = {}
    for art in kept:
        tasks.setdefault(art.task, []).append(str(art.path))
    if len(tasks) > 1:
        listing = "; ".join(f"{t}: {', '.join(p)}" for t, p in tasks.items())
        raise ConfigError(f"{run_dir} holds artifacts of different tasks ({listing}). A report compares "
                          "alternatives for one task: point RUN_DIR at a folder holding one task's artifacts.")
    task = kept[0].task
    return Collection(task, get_task(task).primary_metric, kept, skipped)
