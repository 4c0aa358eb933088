"""`deploylm report`: one library call (report.run.report), then the table on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="folder holding a run's artifacts (searched recursively)"),
        data: Optional[str] = typer.Option(None, help="evaluate every artifact on this dataset's dev split (dir or "
                                                      "alias); default: the metric the manifests recorded, when "
                                                      "all are on the same data, split and samples"),
        output: Optional[Path] = typer.Option(None, help="directory for report.md/json/png(/html) "
                                                         "(default RUN_DIR/report)"),
        rounds: int = typer.Option(3, help="interleaved rounds over all artifacts (a fresh process each); medians "
                                           "and min-max spread"),
        html: bool = typer.Option(False, "--html", help="also a self-contained report.html (plot inlined)"),
        latency_samples: int = typer.Option(200, help="dev sequences timed at batch 1"),
        throughput_samples: int = typer.Option(512, help="dev sequences timed at batch 32"),
    ) -> None:
        """Every artifact under RUN_DIR: metric, latency, throughput, size, peak RSS, lineage, Pareto front."""
        import shlex
        import sys

        from rich.console import Console
        from rich.table import Table

        from .render import HEADER, cells
        from .run import report

        err = Console(stderr=True)
        command = shlex.join(["deploylm", *sys.argv[1:]])
        rep, out = report(run_dir, output, data, rounds, html, latency_samples, throughput_samples, command, err)
        table = Table(*[h.format(metric=f"{rep['metric']['name']} %") for h in HEADER],
                      title=f"{rep['task']}: {rep['metric']['name']} {rep['metric']['source']}")
        for r in rep["artifacts"]:
            table.add_row(*cells(r), style="bold" if r["pareto"] else None)
        Console().print(table)
        err.print(f"report: {out}", highlight=False)
