"""The report as Markdown, JSON and one self-contained HTML page (the PNG inlined as a data URI), written all
together or not at all: the files are made in a hidden sibling directory that replaces the output by a rename."""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
from pathlib import Path

from ..artifacts import clear_leftovers, work_dir
from ..errors import ConfigError

OUTPUTS = ("report.md", "report.json", "report.png", "report.html")
HEADER = ("artifact", "lineage", "{metric}", "b1 p50 ms", "b1 p99 ms", "b32 seq/s", "MB", "peak RSS MB", "Pareto")


def _spread(fig: dict, digits: int) -> str:
    return f"{fig['value']:.{digits}f} ({fig['min']:.{digits}f}–{fig['max']:.{digits}f})"


def cells(r: dict) -> list[str]:
    return [r["name"], r["label"], f"{100 * r['metric']:.2f}", _spread(r["b1_p50_ms"], 2), _spread(r["b1_p99_ms"], 2),
            _spread(r["b32_seq_per_s"], 1), f"{r['weights_mb']:.1f}", _spread(r["peak_rss_mb"], 0),
            "y" if r["pareto"] else "n"]


def machine_line(report: dict) -> str:
    m = report["machine"]
    threads = ",".join(map(str, m.get("threads") or [])) or "?"
    return (f"{m.get('cpu')} ({m.get('simd')}), {m.get('cores')} cores, {threads} threads, {m.get('memory_gb')} GB, "
            f"{m.get('platform')}, Python {m.get('python')}")


def _notes(report: dict) -> list[str]:
    m, meas = report["metric"], report["measurement"]
    return [f"Task: {report['task']}. {m['name']} is {m['source']}: {m['why']}.",
            f"Timed on {meas['data']}:{meas['split']} at real lengths (length-sorted batches padded to their longest "
            f"row): batch {meas['latency_batch']} over {meas['latency_samples']} sequences, batch "
            f"{meas['throughput_batch']} over {meas['throughput_samples']}; {meas['rounds']} rounds, "
            f"{meas['order']}.",
            f"Figures: {meas['figures']}. MB: weight files. Pareto: {report['pareto']}."]


def markdown(report: dict) -> str:
    header = [h.format(metric=f"{report['metric']['name']} %") for h in HEADER]
    lines = [f"# deploylm report: {report['run_dir']}", "", *_notes(report), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in report["artifacts"]]
    lines += ["", "![metric vs throughput](report.png)", "", f"Machine: {machine_line(report)}"]
    lines += [f"Skipped: {s['path']}: {s['reason']}" for s in report["skipped"]]
    lines += [f"Made by: `{report['command']}` at {report['created_at']}", ""]
    return "\n".join(lines)


def html_page(report: dict, png: bytes) -> str:
    e = html.escape
    header = "".join(f"<th>{e(h.format(metric=report['metric']['name'] + ' %'))}</th>" for h in HEADER)
    body = "".join("<tr" + (' class="front"' if r["pareto"] else "") + ">" + "".join(f"<td>{e(c)}</td>" for c in cells(r))
                   + "</tr>" for r in report["artifacts"])
    paras = "".join(f"<p>{e(n)}</p>" for n in _notes(report))
    skipped = "".join(f"<p>Skipped: {e(s['path'])}: {e(s['reason'])}</p>" for s in report["skipped"])
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>deploylm report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(-n+2){text-align:left}"
            "tr.front td{background:#fff0f0}img{max-width:100%}</style></head><body>"
            f"<h1>deploylm report: {e(report['run_dir'])}</h1>{paras}<table><tr>{header}</tr>{body}</table>"
            f"<p><img alt=\"metric vs throughput\" src=\"{uri}\"></p><p>Machine: {e(machine_line(report))}</p>"
            f"{skipped}<p>Made by: <code>{e(str(report['command']))}</code> at {e(report['created_at'])}</p>"
            "</body></html>\n")


def check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; give a directory for the report.")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS)
        if others:  # the directory is replaced whole: never take a user's other files with it
            raise ConfigError(f"--output {out} holds files that are not a report ({', '.join(others[:5])}); "
                              "choose an empty or new directory, or the one a previous report wrote.")


def write(report: dict, out: str | Path, html_too: bool = False) -> Path:
    """report.md/json/png (+ html) in `out`, replacing a previous report there in one rename."""
    from .plot import plot

    out = Path(out)
    check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    tmp = work_dir(out, "tmp")
    tmp.mkdir()
    try:
        plot(report, tmp / "report.png")
        (tmp / "report.md").write_text(markdown(report))
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        if html_too:
            (tmp / "report.html").write_text(html_page(report, (tmp / "report.png").read_bytes()))
        if out.exists():
            old = work_dir(out, "old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
