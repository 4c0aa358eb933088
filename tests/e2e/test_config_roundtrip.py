"""Every stage's manifest `config` fed back with `--config` reproduces the run: the second run records the same
config and does the same work (same method, same fusion, same gate figures where they are deterministic).
Flags still win over the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_inprocess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cls01(tmp_path_factory):
    """A tiny classifier whose labels are the toy SST-2 data's ('0', '1')."""
    from conftest import build_tiny_artifact

    return build_tiny_artifact(tmp_path_factory.mktemp("cls01") / "cls", labels=["0", "1"], seed=2)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _roundtrip(capsys, monkeypatch, tmp_path, command: str, parent, flags: list) -> tuple[dict, dict]:
    first = run_inprocess(capsys, monkeypatch, command, parent, "--output", tmp_path / "first", *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    recorded = _manifest(tmp_path / "first")["config"]
    (tmp_path / "cfg.json").write_text(json.dumps(recorded))
    again = run_inprocess(capsys, monkeypatch, command, parent, "--output", tmp_path / "again",
                          "--config", tmp_path / "cfg.json")
    assert again.returncode == 0, again.stderr[-3000:]
    return _manifest(tmp_path / "first"), _manifest(tmp_path / "again")


def test_export_config_reproduces_the_export(cls01, sst2_dir, tmp_path, capsys, monkeypatch):
    a, b = _roundtrip(capsys, monkeypatch, tmp_path, "export", cls01.path,
                      ["--optimize", "O1", "--data", sst2_dir, "--allow-slower", "--max-metric-drop", "50"])
    assert a["config"] == b["config"]
    assert a["config"]["optimize"] == "O1" and a["config"]["allow_slower"] is True
    assert a["config"]["max_metric_drop"] == 50 and a["config"]["data"] == str(sst2_dir)
    assert a["method"] == b["method"] == "onnx" and a["optimization"] == b["optimization"]
    assert a["gate"]["variant"] == b["gate"]["variant"]  # the same graph on the same data: the same metric


def test_export_without_fusion_round_trips_too(cls01, sst2_dir, tmp_path, capsys, monkeypatch):
    a, b = _roundtrip(capsys, monkeypatch, tmp_path, "export", cls01.path,
                      ["--optimize", "none", "--data", sst2_dir, "--allow-slower", "--max-metric-drop", "50"])
    assert a["config"]["optimize"] is None and b["config"] == a["config"]


@pytest.mark.parametrize("method,extra", [("dynamic-int8", []), ("static-int8", ["--calibration-samples", "16"])])
def test_quantize_config_reproduces_the_quantization(cls01, sst2_dir, tmp_path, capsys, monkeypatch, method,
                                                     extra):
    a, b = _roundtrip(capsys, monkeypatch, tmp_path, "quantize", cls01.path,
                      ["--method", method, "--data", sst2_dir, "--allow-slower", "--max-metric-drop", "50", *extra])
    assert a["config"] == b["config"] and a["config"]["method"] == method
    if extra:
        assert a["config"]["calibration_samples"] == 16
    assert a["optimization"] == b["optimization"]


def test_flags_win_over_the_config_file(cls01, sst2_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "cfg.yaml").write_text(f"method: static-int8\ndata: {sst2_dir}\nallow_slower: true\n"
                                       "max_metric_drop: 50\ncalibration_samples: 8\n")
    res = run_inprocess(capsys, monkeypatch, "quantize", cls01.path, "--output", tmp_path / "q", "--config",
                        tmp_path / "cfg.yaml", "--method", "dynamic-int8")
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = _manifest(tmp_path / "q")["config"]
    assert cfg["method"] == "dynamic-int8" and cfg["calibration_samples"] == 8 and cfg["allow_slower"] is True


def test_a_misspelt_key_in_a_quantize_config_is_refused(cls01, tmp_path, capsys, monkeypatch):
    (tmp_path / "cfg.yaml").write_text("methd: dynamic-int8\n")
    res = run_inprocess(capsys, monkeypatch, "quantize", cls01.path, "--output", tmp_path / "q", "--config",
                        tmp_path / "cfg.yaml")
    assert res.returncode == 2 and "did you mean 'method'" in " ".join(res.stderr.split())
    assert not (tmp_path / "q").exists()


def test_decoder_quantize_config_reproduces_the_gate_options(tmp_path, capsys, monkeypatch):
    from test_weight_int8 import CONTEXTS, write_squad
    from tiny_decoders import make_tiny_decoder

    from deploylm.models.importer import import_decoder

    art = import_decoder(str(make_tiny_decoder("llama", tmp_path / "hf")), tmp_path / "llama")
    squad = write_squad(tmp_path / "squad.json", CONTEXTS)
    a, b = _roundtrip(capsys, monkeypatch, tmp_path, "quantize", art.path,
                      ["--method", "weight-int8", "--data", squad, "--ppl-texts", "3", "--max-ppl-increase", "50",
                       "--allow-slower"])
    assert a["config"] == b["config"]
    assert a["config"]["ppl_texts"] == 3 and a["config"]["max_ppl_increase"] == 50
    assert a["gate"]["perplexity"] == b["gate"]["perplexity"]  # same weights, same texts: the same perplexity


def test_bench_config_measures_again_the_same_way(cls01, sst2_dir, tmp_path, capsys, monkeypatch):
    import shutil

    art = tmp_path / "cls"
    shutil.copytree(cls01.path, art)
    first = run_inprocess(capsys, monkeypatch, "bench", art, "--data", sst2_dir, "--batch-sizes", "1,4",
                          "--seq-len", "real,16")
    assert first.returncode == 0, first.stderr[-3000:]
    entry = _manifest(art)["bench"][sst2_dir.name]
    assert entry["config"] == {"data": str(sst2_dir), "batch_sizes": [1, 4], "seq_len": ["real", "16"], "rounds": 1}
    (tmp_path / "bench.json").write_text(json.dumps(entry["config"]))
    again = run_inprocess(capsys, monkeypatch, "bench", art, "--config", tmp_path / "bench.json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = _manifest(art)["bench"][sst2_dir.name]
    assert second["config"] == entry["config"] and second["measured_at"] >= entry["measured_at"]
    assert [(r["batch_size"], r["seq"]) for r in second["results"]] == [(r["batch_size"], r["seq"])
                                                                       for r in entry["results"]]


def test_finetune_config_reproduces_the_training(cls01, sst2_dir, tmp_path, capsys, monkeypatch):
    first = run_inprocess(capsys, monkeypatch, "finetune", "--model", cls01.path, "--data", sst2_dir, "--output",
                          tmp_path / "first", "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-3",
                          "--max-length", "32", "--seed", "7")
    assert first.returncode == 0, first.stderr[-3000:]
    a = _manifest(tmp_path / "first")
    (tmp_path / "cfg.json").write_text(json.dumps(a["config"]))
    again = run_inprocess(capsys, monkeypatch, "finetune", "--output", tmp_path / "again", "--config",
                          tmp_path / "cfg.json")
    assert again.returncode == 0, again.stderr[-3000:]
    b = _manifest(tmp_path / "again")
    assert a["config"] == b["config"] and a["config"]["seed"] == 7
    dev = "sst2mini:dev"  # same seed, same data: the same model
    assert a["metrics"][dev]["accuracy"] == b["metrics"][dev]["accuracy"]
    assert a["training"]["train_samples"] == b["training"]["train_samples"]
