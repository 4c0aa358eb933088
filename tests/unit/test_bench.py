"""Offline benchmark library: FLOP model, batching modes, a real measurement of tiny artifacts in
fresh subprocesses, manifest recording, table and plot. Timings are recorded, never asserted."""


import pytest

from conftest import build_tiny_artifact
from deploylm.bench.measure import encoder_flops, make_batches
from deploylm.bench.run import parse_batch_sizes, parse_seqs
from deploylm.errors import ConfigError

MINILM = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}


def test_flop_model_matches_the_published_minilm_cost():
    # ASSETS.md: MiniLM-L6 ~2.87 GFLOP per sequence at 128 tokens, ~0.69 at 32.
    assert encoder_flops(MINILM, 128) / 1e9 == pytest.approx(2.87, abs=0.01)
    assert encoder_flops(MINILM, 32) / 1e9 == pytest.approx(0.69, abs=0.01)
    # first-token last layer at 128: five full layers + K/V for 128 tokens + the rest for one token
    full_layer = 2.87e9 / 6
    last = 2 * 128 * 2 * 384 * 384 + 2 * (2 * 384 * 384 + 2 * 384 * 1536) + 4 * 128 * 384
    assert encoder_flops(MINILM, 128, first_token_last_layer=True) == pytest.approx(5 * full_layer + last, rel=1e-3)


def test_real_lengths_pad_per_batch_fixed_pads_all():
    feats = [{"input_ids": [1] * n, "attention_mask": [1] * n} for n in (3, 50, 4, 49, 5)]
    real = make_batches(feats, 2, "real", 0, ("input_ids", "attention_mask"))
    assert sorted(b["input_ids"].shape[1] for b in real) == [4, 49, 50]
    fixed = make_batches(feats, 2, "128", 0, ("input_ids", "attention_mask"))
    assert all(b["input_ids"].shape[1] == 128 for b in fixed)
    assert fixed[0]["attention_mask"].sum() == 53  # padding is masked, not counted as tokens


def test_bad_options():
    assert parse_batch_sizes("1,32") == (1, 32)
    for bad in ("", "a", "0,4"):
        with pytest.raises(ConfigError):
            parse_batch_sizes(bad)
    assert parse_seqs("real,128") == ("real", "128")
    with pytest.raises(ConfigError, match="real"):
        parse_seqs("long")


def test_bench_two_backends_records_manifest_table_and_plot(tmp_path):
    from rich.console import Console

    from deploylm.artifacts import Artifact
    from deploylm.bench import report
    from deploylm.bench.run import bench
    from deploylm.optimize.export_onnx import export
    from deploylm.optimize.gate import GateOptions

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"word {i} " * (1 + i % 9) + f"\t{i % 2}\n"
                                                                        for i in range(40)))
    art = build_tiny_artifact(tmp_path / "cls", labels=["0", "1"])
    onnx_art = export(art, tmp_path / "onnx", optimize="O2", gate=GateOptions(data=str(data), allow_slower=True))
    # envs reach the measuring subprocess: the ONNX one runs with one intra-op thread
    results = bench([art, onnx_art], str(data), batch_sizes=(1, 8), seqs=("real", "32"), rounds=1,
                    latency_samples=10, throughput_samples=24, envs=[None, {"DEPLOYLM_THREADS": "1"}])
    assert [r["backend"] for r in results] == ["torch", "onnxruntime"]
    assert results[1]["threads"] == 1
    for res in results:
        assert res["rounds"] == 1 and res["metric"]["samples"] == 40 and res["peak_rss_mb"] > 50
        assert {(r["seq"], r["batch_size"]) for r in res["results"]} == {("real", 1), ("real", 8), ("32", 1), ("32", 8)}
        row = next(r for r in res["results"] if r["seq"] == "32" and r["batch_size"] == 8)
        assert row["sequences"] == 24 and row["mean_padded_len"] == 32 and row["seq_per_s"] > 0
        assert res["file_mb"] > 0
    # same model, same data: the two backends agree on the metric
    assert results[0]["metric"]["accuracy"] == results[1]["metric"]["accuracy"]
    recorded = Artifact.open(onnx_art.path).manifest["bench"]["data"]
    assert recorded["backend"] == "onnxruntime" and recorded["machine"]["cores"] >= 1
    console = Console(record=True, width=200)
    console.print(report.table(results, ("real", "32"), (1, 8)))
    assert "1.00x" in console.export_text()
    png = report.plot(results, tmp_path / "plot.png", "real", 8)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_rounds_merge_to_medians_and_max_rss():
    from deploylm.bench.run import merge_rounds

    def run(sps, rss):
        return {"peak_rss_mb": rss, "metric": {"accuracy": 0.5}, "results": [
            {"seq": "real", "batch_size": 32, "p50_ms": 1000 / sps, "p99_ms": 2000 / sps, "seq_per_s": sps,
             "gflop_per_s": sps / 10}]}

    merged = merge_rounds([run(100, 500), run(300, 700), run(200, 600)])
    assert merged["rounds"] == 3 and merged["peak_rss_mb"] == 700
    assert merged["results"][0]["seq_per_s"] == 200 and merged["results"][0]["gflop_per_s"] == 20
    # the per-round spread under each median, and the peak RSS's
    assert merged["results"][0]["spread"]["seq_per_s"] == [100, 300] and merged["peak_rss_spread_mb"] == [500, 700]
