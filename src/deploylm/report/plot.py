"""report.png: task metric vs batch-32 throughput, each point labelled by its lineage, per-round spread as a
horizontal bar, the Pareto front marked and joined."""

from __future__ import annotations

from pathlib import Path

# label offsets (points) taken in turn: variants of one model sit close together, and one fixed offset would stack
# their labels on top of each other
_OFFSETS = ((6, 6), (6, -12), (-6, 10), (-6, -14))


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, metric = report["artifacts"], report["metric"]["name"]
    fig, ax = plt.subplots(figsize=(10, 6))
    for i, r in enumerate(sorted(rows, key=lambda r: r["b32_seq_per_s"]["value"])):
        t, y = r["b32_seq_per_s"], 100 * r["metric"]
        ax.errorbar([t["value"]], [y], xerr=[[t["value"] - t["min"]], [t["max"] - t["value"]]], fmt="o",
                    color="tab:red" if r["pareto"] else "tab:blue", ms=7, capsize=3, zorder=3)
        ax.annotate(r["label"], (t["value"], y), xytext=_OFFSETS[i % len(_OFFSETS)], textcoords="offset points",
                    fontsize=7, ha="left" if _OFFSETS[i % len(_OFFSETS)][0] > 0 else "right")
    front = sorted((r["b32_seq_per_s"]["value"], 100 * r["metric"]) for r in rows if r["pareto"])
    ax.plot([x for x, _ in front], [y for _, y in front], "--", color="tab:red", lw=1.2, zorder=2,
            label="Pareto front (red points)")
    m = report["measurement"]
    ax.set_xlabel(f"throughput, sequences/s (batch {m['throughput_batch']}, {m['data']}:{m['split']} real lengths; "
                  f"bars: min-max over {m['rounds']} rounds)", fontsize=8)
    ax.set_ylabel(f"{metric} (%), {report['metric']['source']}")
    ax.set_title(f"{Path(report['run_dir']).name}: {metric} vs throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.15, y=0.15)  # room for the labels of the outermost points
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
