"""`deploylm report` on a tiny run: an fp32 artifact and its `deploylm quantize --method dynamic-int8` child,
measured for real (one round, a few sequences), written as report.md/json/png/html."""

from __future__ import annotations

import json
import shutil

import pytest
from cli_run import run_inprocess

pytestmark = pytest.mark.e2e


@pytest.fixture
def tiny_run(tmp_path, sst2_dir, capsys, monkeypatch):
    from conftest import build_tiny_artifact

    run = tmp_path / "run"
    fp32 = build_tiny_artifact(run / "fp32", labels=["0", "1"], seed=3)
    res = run_inprocess(capsys, monkeypatch, "quantize", fp32.path, "--output", run / "int8", "--method",
                        "dynamic-int8", "--data", sst2_dir, "--allow-slower")
    assert res.returncode == 0, res.stderr[-3000:]
    # what a killed stage leaves beside its output: never a row of the report
    shutil.copytree(fp32.path, run / ".int8.tmp-999999-deadbeef")
    return run


def test_report_of_a_quantized_run(tiny_run, tmp_path, capsys, monkeypatch):
    fast = ("--rounds", "1", "--latency-samples", "4", "--throughput-samples", "32")
    res = run_inprocess(capsys, monkeypatch, "report", tiny_run, "--html", *fast)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tiny_run / "report"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md", "report.png"]
    rep = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in rep["artifacts"]}
    assert sorted(rows) == ["fp32", "int8"]
    assert rows["int8"]["label"] == "finetune → dynamic-int8" and rows["fp32"]["label"] == "finetune"
    assert rows["int8"]["backend"] == "onnxruntime" and rows["fp32"]["backend"] == "torch"
    # the fp32 artifact had no recorded metric: both evaluated on the one dataset the quantize gate recorded
    assert rep["metric"]["source"] == "evaluated" and rep["metric"]["name"] == "accuracy"
    quant_gate = json.loads((tiny_run / "int8" / "manifest.json").read_text())["gate"]["variant"]["accuracy"]
    assert rows["int8"]["metric"] == quant_gate and rows["int8"]["metric_samples"] == 32
    for r in rows.values():
        t = r["b32_seq_per_s"]
        assert t["min"] <= t["value"] <= t["max"] and t["value"] > 0 and r["b32_sequences"] == 32
        assert r["b1_p50_ms"]["value"] > 0 and r["peak_rss_mb"]["value"] > 50 and r["weights_mb"] > 0
    # at least one point is on the front, and a point is off it only when the other beats it
    fp, q = rows["fp32"], rows["int8"]
    beats = lambda a, b: (a["metric"] >= b["metric"] and a["b32_seq_per_s"]["value"] >= b["b32_seq_per_s"]["value"]
                          and (a["metric"] > b["metric"] or a["b32_seq_per_s"]["value"] > b["b32_seq_per_s"]["value"]))
    assert fp["pareto"] == (not beats(q, fp)) and q["pareto"] == (not beats(fp, q))
    md = (out / "report.md").read_text()
    assert "finetune → dynamic-int8" in md and "deploylm report" in md and "Machine:" in md
    assert "| fp32 | finetune |" in md
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "report.png" not in page

    # timings recorded like `deploylm bench`'s; the metric was not computed again in every measuring process
    bench_entry = json.loads((tiny_run / "fp32" / "manifest.json").read_text())["bench"]["sst2mini"]
    assert bench_entry["metric"] is None and bench_entry["split"] == "dev" and bench_entry["rounds"] == 1

    # the evaluation was recorded (as `deploylm eval` records it): a next report takes the manifests' figures
    from deploylm.artifacts import Artifact
    from deploylm.report.metric import plan_metric

    assert plan_metric([Artifact.open(tiny_run / n) for n in rows], "accuracy", None).source == "recorded"


def test_report_bad_input(tmp_path, capsys, monkeypatch):
    res = run_inprocess(capsys, monkeypatch, "report", tmp_path / "missing")
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_inprocess(capsys, monkeypatch, "report", tmp_path / "empty")
    assert res.returncode == 2 and "no artifacts" in " ".join(res.stderr.split())
    assert not (tmp_path / "empty" / "report").exists()
