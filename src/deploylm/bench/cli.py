"""`deploylm bench`: one library call (bench.run.bench), then a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        artifacts: List[Path] = typer.Argument(..., help="artifacts to measure; ratios are vs the first"),
        data: Optional[str] = typer.Option(None, help="dataset whose dev split is measured (dir or alias, e.g. sst2)"),
        config: Optional[Path] = typer.Option(None, help="YAML/JSON file with these options (a manifest's "
                                                          "bench.DATA.config measures again the same way); flags win"),
        batch_sizes: Optional[str] = typer.Option(None, help="comma-separated; 1 = latency p50/p99, >1 = throughput "
                                                             "(default 1,32)"),
        seq_len: Optional[str] = typer.Option(None, help="'real' (length-aware batching), a fixed width like 128, "
                                                         "or both: real,128 (default real)"),
        rounds: Optional[int] = typer.Option(None, help="interleaved rounds (fresh process per artifact per round); "
                                                        "medians (default 1)"),
        compare_peers: bool = typer.Option(False, help="add the PyTorch fp32 source and Optimum's ORT int8 path"),
        plot: Optional[Path] = typer.Option(None, help="PNG path for throughput vs accuracy (default: beside the first artifact)"),
    ) -> None:
        """Latency, throughput, size, peak RSS and accuracy of ARTIFACTS side by side; recorded in each manifest."""
        from rich.console import Console

        from ..artifacts import Artifact
        from . import report
        from .run import bench, parse_batch_sizes, parse_seqs

        from ..config import load_config
        from ..errors import ConfigError
        from ..optimize.stages import BenchConfig

        err = Console(stderr=True)
        cfg = load_config(BenchConfig, config, data=data, rounds=rounds,
                          batch_sizes=list(parse_batch_sizes(batch_sizes)) if batch_sizes else None,
                          seq_len=list(parse_seqs(seq_len)) if seq_len else None)
        if cfg.data is None:
            raise ConfigError("bench needs a dataset: pass --data DATA (a dataset dir or alias such as sst2), or a "
                              "--config file that names one.")
        (sizes, seqs), data, rounds = cfg.plan(), cfg.data, cfg.rounds
        arts = [Artifact.open(a) for a in artifacts]
        peers: list = []
        if compare_peers:
            from .peers import PEER_ENV, optimum_peer, pytorch_peer

            src = pytorch_peer(arts[0])  # the baseline: ratios are vs PyTorch fp32 eager
            err.print("building Optimum's peer in its own venv ...")
            peers = optimum_peer(arts[0], src.path.parent)
            arts = [src] + peers + [a for a in arts if a.path.resolve() != src.path.resolve()]
        envs = [PEER_ENV if a in peers else None for a in arts]
        results = bench(arts, data, sizes, seqs, rounds=rounds, progress=lambda m: err.print(f"[dim]{m}[/]"),
                        envs=envs, config=cfg.model_dump(mode="json"))
        Console().print(report.table(results, seqs, sizes))
        big = max(sizes)
        png = plot or arts[0].path.parent / "bench.png"
        report.plot(results, png, seqs[0], big)
        err.print(f"plot: {png}")
