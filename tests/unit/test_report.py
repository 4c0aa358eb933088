"""deploylm report's pure parts: the Pareto front on hand-made points, lineage labels from hand-written
manifests (including a parent that is gone), artifact discovery, the metric's source, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploylm.errors import ConfigError
from deploylm.report.lineage import lineage, lineage_label, stage_label
from deploylm.report.pareto import pareto_front


# --- Pareto front: (metric, throughput), both maximised ----------------------------------------------------------
def test_pareto_front_of_a_trade_off():
    pts = [(0.90, 100), (0.88, 300), (0.85, 250), (0.80, 900), (0.70, 800)]
    # (0.85, 250) is beaten by (0.88, 300) on both; (0.70, 800) by (0.80, 900)
    assert pareto_front(pts) == [True, True, False, True, False]


def test_pareto_ties_on_one_axis():
    # same metric: the faster one dominates; same speed: the more accurate one does
    assert pareto_front([(0.9, 100), (0.9, 200)]) == [False, True]
    assert pareto_front([(0.8, 200), (0.9, 200)]) == [False, True]


def test_pareto_duplicates_and_single_point():
    # equal points do not dominate each other: both stay (two equally good choices)
    assert pareto_front([(0.9, 100), (0.9, 100), (0.8, 50)]) == [True, True, False]
    assert pareto_front([(0.5, 1.0)]) == [True]
    assert pareto_front([]) == []


# --- lineage labels from hand-written manifests -------------------------------------------------------------------
def _write(path: Path, stage: str, config: dict, parent: Path | None = None, parent_stage: str | None = None,
           task: str = "classification", **extra) -> Path:
    path.mkdir(parents=True)
    par = None if parent is None else {"path": str(parent), "hash": "x", "stage": parent_stage or "?"}
    (path / "manifest.json").write_text(json.dumps({"stage": stage, "config": config, "parent": par, "task": task,
                                                    "labels": ["negative", "positive"], "files": {}, **extra}))
    return path


def test_lineage_of_a_compression_chain(tmp_path):
    ft = _write(tmp_path / "ft", "finetune", {"model": "minilm-l6", "data": "sst2"})
    ds = _write(tmp_path / "ds", "distill", {"teacher": str(ft), "student": None, "student_layers": 3,
                                             "temperature": 2.0, "alpha": 0.5}, ft, "finetune")
    pr = _write(tmp_path / "pr", "prune", {"heads": 0.3, "ffn": 0.4, "layers": None, "unstructured": None,
                                           "recover_epochs": 1, "mode": "recover"}, ds, "distill")
    q = _write(tmp_path / "q", "quantize", {"method": "dynamic-int8"}, pr, "prune")
    steps = lineage(q)
    assert lineage_label(steps) == "finetune(minilm-l6) → distill(3L) → prune(heads .3, ffn .4) → dynamic-int8"
    assert [s["path"] for s in steps] == [str(ft), str(ds), str(pr), str(q)]
    assert not any(s["missing"] for s in steps)


def test_lineage_labels_per_stage():
    assert stage_label({"stage": "distill", "config": {"student": "minilm-l6", "student_layers": None}}) \
        == "distill(minilm-l6)"
    assert stage_label({"stage": "prune", "config": {"heads": None, "ffn": None, "layers": 2, "unstructured": None}}) \
        == "prune(layers 2)"
    assert stage_label({"stage": "prune", "config": {"unstructured": 0.5}}) == "prune(unstructured .5)"
    assert stage_label({"stage": "export", "config": {"optimize": "O2"}, "method": "onnx"}) == "onnx(O2)"
    assert stage_label({"stage": "export", "config": {"optimize": "O3"}, "method": "onnx-O3"}) == "onnx-O3"
    # a finetune started from a path is named by the model's folder; without a model, by its stage
    assert stage_label({"stage": "finetune", "config": {"model": "/models/bert-tiny"}}) == "finetune(bert-tiny)"
    assert stage_label({"stage": "finetune", "config": {}}) == "finetune"
    assert stage_label({"stage": "merge-lora", "config": {}}) == "merge-lora"  # unknown stage: its name


def test_lineage_ends_at_a_parent_that_is_gone(tmp_path):
    gone = tmp_path / "deleted-distill"  # never written: the manifest still records it
    pr = _write(tmp_path / "pr", "prune", {"ffn": 0.4}, gone, "distill")
    q = _write(tmp_path / "q", "quantize", {"method": "static-int8"}, pr, "prune")
    steps = lineage(q)
    assert lineage_label(steps) == "distill → prune(ffn .4) → static-int8"
    assert steps[0] == {"label": "distill", "stage": "distill", "path": str(gone), "missing": True}


def test_lineage_stops_at_the_base_model(tmp_path):
    base = tmp_path / "base"  # a plain model directory: no manifest, and the parent record has no stage
    base.mkdir()
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "manifest.json").write_text(json.dumps({"stage": "finetune", "config": {"model": "minilm-l6"},
                                                  "parent": {"model": "minilm-l6", "path": str(base), "kind": "alias"}}))
    assert lineage_label(lineage(ft)) == "finetune(minilm-l6)"


# --- discovery and bad input --------------------------------------------------------------------------------------
def test_find_artifacts_skips_hidden_work_dirs(tmp_path):
    from deploylm.report.collect import find_artifacts

    a = _write(tmp_path / "a", "finetune", {})
    b = _write(tmp_path / "sub" / "b", "quantize", {"method": "dynamic-int8"}, a, "finetune")
    _write(tmp_path / ".a.checkpoints" / "checkpoint-3", "finetune", {})
    _write(tmp_path / ".b.tmp-123-abcd", "quantize", {})
    assert find_artifacts(tmp_path) == [a, b]


def test_missing_or_empty_run_dir(tmp_path):
    from deploylm.report.collect import collect

    with pytest.raises(ConfigError, match="does not exist"):
        collect(tmp_path / "nope")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no artifacts"):
        collect(tmp_path / "empty")


def test_different_tasks_are_refused_and_decoders_skipped(tmp_path):
    from deploylm.report.collect import collect

    _write(tmp_path / "run" / "cls", "finetune", {})
    _write(tmp_path / "run" / "ner", "finetune", {}, task="token-classification")
    with pytest.raises(ConfigError, match="different tasks"):
        collect(tmp_path / "run")
    _write(tmp_path / "gen" / "llm", "import", {}, task="text-generation")
    with pytest.raises(ConfigError, match="no artifact the report can compare.*decoder"):
        collect(tmp_path / "gen")
    _write(tmp_path / "gen" / "cls", "finetune", {})
    col = collect(tmp_path / "gen")
    assert [a.name for a in col.artifacts] == ["cls"] and col.metric_name == "accuracy"
    assert col.skipped[0]["path"].endswith("llm") and "decoder" in col.skipped[0]["reason"]


# --- the metric's source ------------------------------------------------------------------------------------------
def _art(tmp_path, name: str, metrics: dict):
    from deploylm.artifacts import Artifact

    return Artifact.open(_write(tmp_path / name, "finetune", {}, metrics=metrics))


def _rec(acc, samples=872, data="/d/sst2"):
    return {"accuracy": acc, "macro_f1": acc, "samples": samples, "data": data}


def test_recorded_metric_used_only_when_data_split_and_samples_agree(tmp_path):
    from deploylm.report.metric import evaluate_all, plan_metric

    a = _art(tmp_path, "a", {"sst2:dev": _rec(0.9), "rt:valid": _rec(0.8, 1706, "/d/rt")})
    b = _art(tmp_path, "b", {"sst2:dev": _rec(0.85)})
    plan = plan_metric([a, b], "accuracy", None)
    assert (plan.source, plan.data, plan.split, plan.samples) == ("recorded", "/d/sst2", "dev", 872)
    assert [m["value"] for m in evaluate_all([a, b], plan, "accuracy")] == [0.9, 0.85]
    # --data always evaluates
    assert plan_metric([a, b], "accuracy", "sst2").source == "evaluated"
    # a subset of dev is not the same figure: evaluate every artifact on the one dataset recorded
    c = _art(tmp_path, "c", {"sst2:dev": _rec(0.7, samples=200)})
    plan = plan_metric([a, c], "accuracy", None)
    assert (plan.source, plan.data, plan.split) == ("evaluated", "/d/sst2", "dev")
    # nothing in common and no one dataset to evaluate on: ask for --data
    d = _art(tmp_path, "d", {"rt:valid": _rec(0.8, 1706, "/d/rt")})
    with pytest.raises(ConfigError, match="--data"):
        plan_metric([b, d], "accuracy", None)
    with pytest.raises(ConfigError, match="--data"):
        plan_metric([_art(tmp_path, "e", {})], "accuracy", None)


def test_report_output_holding_other_files_is_refused(tmp_path):
    from deploylm.report.render import check_output

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("old")
    check_output(tmp_path / "out")  # a previous report: replaced
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        check_output(tmp_path / "out")


# --- rendering: a hand-made report, written whole or not at all ---------------------------------------------------
def _fig(v):
    return {"value": v, "min": 0.9 * v, "max": 1.1 * v}


def _report(tmp_path) -> dict:
    def row(name, label, acc, sps, front):
        return {"name": name, "path": str(tmp_path / name), "label": label, "metric": acc, "b1_p50_ms": _fig(5.0),
                "b1_p99_ms": _fig(9.0), "b32_seq_per_s": _fig(sps), "weights_mb": 86.7, "peak_rss_mb": _fig(400.0),
                "pareto": front}

    return {"run_dir": str(tmp_path), "created_at": "2026-12-03T18:00:00", "command": "deploylm report runs/x",
            "task": "classification",
            "metric": {"name": "accuracy", "source": "recorded", "why": "recorded in every manifest", "data": "sst2",
                       "split": "dev"},
            "measurement": {"data": "sst2", "split": "dev", "rounds": 3, "latency_batch": 1, "latency_samples": 200,
                            "throughput_batch": 32, "throughput_samples": 512, "figures": "medians",
                            "order": "round-robin"},
            "machine": {"cpu": "AMD EPYC", "simd": "avx2", "cores": 2, "threads": [2], "memory_gb": 23.5,
                        "platform": "Linux", "python": "3.11"},
            "pareto": "maximise both", "skipped": [{"path": "llm", "reason": "decoder"}],
            "artifacts": [row("ft", "finetune(minilm-l6)", 0.91, 120.0, True),
                          row("q", "finetune(minilm-l6) → dynamic-int8", 0.905, 350.0, True),
                          row("p", "finetune(minilm-l6) → prune(ffn .4) | odd", 0.80, 200.0, False)]}


def test_markdown_and_html_rows(tmp_path):
    from deploylm.report.render import html_page, markdown

    rep = _report(tmp_path)
    md = markdown(rep)
    assert "| q | finetune(minilm-l6) → dynamic-int8 | 90.50 | 5.00 (4.50–5.50) | 9.00 (8.10–9.90) | " \
           "350.0 (315.0–385.0) | 86.7 | 400 (360–440) | y |" in md
    assert "prune(ffn .4) \\| odd" in md  # a | in a label does not break the table
    assert "Machine: AMD EPYC (avx2), 2 cores, 2 threads" in md and "`deploylm report runs/x`" in md
    assert "Skipped: llm: decoder" in md
    page = html_page(rep, b"\x89PNG fake")
    assert page.count('<tr class="front">') == 2 and "data:image/png;base64,iVBORyBmYWtl" in page
    assert "<td>finetune(minilm-l6) → prune(ffn .4) | odd</td>" in page


def test_write_replaces_a_report_whole(tmp_path, monkeypatch):
    from deploylm.report import render

    out = tmp_path / "out"
    render.write(_report(tmp_path), out, html_too=True)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md", "report.png"]
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "report.md").read_text()

    def broken(report, html_too):  # a failure after some files are written
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "html_page", broken)
    with pytest.raises(RuntimeError):
        render.write({**_report(tmp_path), "command": "deploylm report again"}, out, html_too=True)
    assert (out / "report.md").read_text() == before  # the old report, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # no work dir left
    monkeypatch.undo()
    render.write(_report(tmp_path), out)  # without --html: no stale page from the earlier run
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "report.png"]


def test_recorded_data_that_is_gone_asks_for_data(tmp_path):
    from deploylm.report.run import build_report

    gone = str(tmp_path / "moved-sst2")
    _write(tmp_path / "run" / "a", "finetune", {}, metrics={"sst2:dev": _rec(0.9, data=gone)})
    with pytest.raises(ConfigError, match="not there any more.*--data"):
        build_report(tmp_path / "run", rounds=1)
    with pytest.raises(ConfigError, match="--rounds"):
        build_report(tmp_path / "run", rounds=0)
