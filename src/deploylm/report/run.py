"""deploylm report, the library call: collect the run's artifacts, take their metric (recorded or evaluated),
time them all in interleaved rounds with `deploylm bench`'s measurement (bench/run.py: a fresh process per
artifact per round, order reversed every other round), mark the Pareto front, write md/json/png(/html)."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from .collect import collect
from .lineage import lineage, lineage_label
from .metric import evaluate_all, plan_metric
from .pareto import pareto_front

LATENCY_BS, THROUGHPUT_BS = 1, 32


def _figure(row: dict, key: str) -> dict:
    lo, hi = row["spread"][key]
    return {"value": row[key], "min": lo, "max": hi}


def _disk_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


def _measure(arts, plan, rounds: int, latency_samples: int, throughput_samples: int, console) -> list[dict]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.run import bench

    total = rounds * len(arts)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=console is None, transient=True) as bar:
        tid = bar.add_task("measuring", total=total)
        done = [0]

        def progress(message: str) -> None:  # bench calls this before each measurement
            bar.update(tid, completed=done[0], description=message)
            done[0] += 1

        results = bench(arts, plan.data, (LATENCY_BS, THROUGHPUT_BS), ("real",), rounds=rounds,
                        latency_samples=latency_samples, throughput_samples=throughput_samples,
                        progress=progress, split=plan.split, metric=False)
        bar.update(tid, completed=total)
    return results


def _row(art, run_dir: Path, metric: dict, res: dict) -> dict:
    from ..bench.report import row as bench_row

    b1, b32 = bench_row(res, "real", LATENCY_BS), bench_row(res, "real", THROUGHPUT_BS)
    steps = lineage(art.path, art.manifest)
    lo, hi = res["peak_rss_spread_mb"]
    return {"name": art.path.relative_to(run_dir).as_posix() if art.path.is_relative_to(run_dir) else str(art.path),
            "path": str(art.path), "label": lineage_label(steps), "lineage": steps, "stage": art.stage,
            "format": art.format, "backend": res["backend"], "threads": res.get("threads"),
            "metric": metric["value"], "metric_samples": metric["samples"],
            "b1_p50_ms": _figure(b1, "p50_ms"), "b1_p99_ms": _figure(b1, "p99_ms"),
            "b32_seq_per_s": _figure(b32, "seq_per_s"), "b32_sequences": b32["sequences"],
            "weights_mb": res["file_mb"], "disk_mb": _disk_mb(art.path),
            "peak_rss_mb": {"value": res["peak_rss_mb"], "min": lo, "max": hi}}


def build_report(run_dir: str | Path, data: str | None = None, rounds: int = 3, latency_samples: int = 200,
                 throughput_samples: int = 512, command: str | None = None, console=None) -> dict:
    """The report as a dict (what report.json holds). console: a rich Console for progress and notes (None: quiet)."""
    from ..machine import machine_info

    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, not {rounds}.")
    if latency_samples < 1 or throughput_samples < 1:
        raise ConfigError("--latency-samples and --throughput-samples must be at least 1.")
    run_dir = Path(run_dir).resolve() if Path(run_dir).exists() else Path(run_dir)
    col = collect(run_dir)
    for s in col.skipped:
        console and console.print(f"[yellow]skipped[/] {s['path']}: {s['reason']}", highlight=False)
    plan = plan_metric(col.artifacts, col.metric_name, data)
    if not data and Path(plan.data).is_absolute() and not Path(plan.data).exists():
        raise ConfigError(f"The manifests name {plan.data} as the dev data their {col.metric_name} was measured on, "
                          "but it is not there any more; pass --data DATA (a dataset dir or alias such as sst2) to "
                          "evaluate and time every artifact on it.")
    console and console.print(f"[dim]{col.metric_name}: {plan.why}[/]", highlight=False)
    metrics = evaluate_all(col.artifacts, plan, col.metric_name)
    results = _measure(col.artifacts, plan, rounds, latency_samples, throughput_samples, console)
    rows = [_row(a, run_dir, m, r) for a, m, r in zip(col.artifacts, metrics, results)]
    front = pareto_front([(r["metric"], r["b32_seq_per_s"]["value"]) for r in rows])
    for r, on in zip(rows, front):
        r["pareto"] = on
    threads = sorted({r["threads"] for r in rows if r["threads"]})
    return {
        "run_dir": str(run_dir), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        "task": col.task,
        "metric": {"name": col.metric_name, "source": plan.source, "why": plan.why, "data": plan.data,
                   "split": plan.split},
        "measurement": {"data": plan.data, "split": plan.split, "lengths": "real", "rounds": rounds,
                        "latency_batch": LATENCY_BS, "latency_samples": latency_samples,
                        "throughput_batch": THROUGHPUT_BS, "throughput_samples": throughput_samples,
                        "figures": "value = median over rounds (peak RSS: the largest), min/max = per-round spread",
                        "order": "round-robin over artifacts, reversed every other round, a fresh process each"},
        "machine": {**machine_info(), "threads": threads},
        "pareto": "maximise metric and b32 throughput: on the front when no other artifact is >= on both and > on one",
        "skipped": col.skipped,
        "artifacts": rows,
    }


def report(run_dir: str | Path, output: str | Path | None = None, data: str | None = None, rounds: int = 3,
           html: bool = False, latency_samples: int = 200, throughput_samples: int = 512,
           command: str | None = None, console=None) -> tuple[dict, Path]:
    """Build the report and write it (default RUN_DIR/report/); returns it and the directory written."""
    from .render import check_output, write

    out = Path(output) if output else Path(run_dir) / "report"
    check_output(out)  # before minutes of measuring, not after
    rep = build_report(run_dir, data, rounds, latency_samples, throughput_samples, command, console)
    return rep, write(rep, out, html)
