"""Bench results as a rich table (ratios vs the first artifact) and a throughput-vs-accuracy plot."""

from __future__ import annotations

from pathlib import Path


def row(res: dict, seq: str, bs: int) -> dict | None:
    return next((r for r in res["results"] if r["seq"] == seq and r["batch_size"] == bs), None)


def label(res: dict) -> str:
    return f"{Path(res['artifact']).name} ({res['method']}, {res['backend']})"


def table(results: list[dict], seqs, batch_sizes):
    from rich.table import Table

    metric = next(iter(k for k in results[0]["metric"] if k != "samples"))
    t = Table(title=f"ratios vs {Path(results[0]['artifact']).name}")
    t.add_column("artifact")
    t.add_column(metric, justify="right")
    for seq in seqs:
        for bs in batch_sizes:
            t.add_column(f"{seq} b{bs} " + ("p50/p99 ms" if bs == 1 else "seq/s"), justify="right")
    for name in ("MB", "peak RSS MB"):
        t.add_column(name, justify="right")
    base = results[0]
    for res in results:
        cells = [label(res), f"{100 * res['metric'][metric]:.2f}"]
        for seq in seqs:
            for bs in batch_sizes:
                r, b = row(res, seq, bs), row(base, seq, bs)
                if bs == 1:
                    cells.append(f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f} ({b['p50_ms'] / r['p50_ms']:.2f}x)")
                else:
                    cells.append(f"{r['seq_per_s']:.1f} ({r['seq_per_s'] / b['seq_per_s']:.2f}x)")
        cells += [f"{res['file_mb']:.1f}", f"{res['peak_rss_mb']:.0f}"]
        t.add_row(*cells)
    return t


def plot(results: list[dict], path: Path, seq: str, batch_size: int, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = next(iter(k for k in results[0]["metric"] if k != "samples"))
    fig, ax = plt.subplots(figsize=(8, 5))
    for res in results:
        r = row(res, seq, batch_size)
        if r is None:
            continue
        x, y = r["seq_per_s"], 100 * res["metric"][metric]
        # a legend, not annotations: variants of one model sit close together and labels would collide
        ax.scatter([x], [y], s=50, label=f"{res.get('name') or Path(res['artifact']).name}: {x:.0f}/s, {y:.2f}%")
    ax.set_xlabel(f"throughput, sequences/s (batch {batch_size}, {seq} lengths)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or "throughput vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
