"""ONNX export through real onnxruntime: dynamic axes, ORT fusions per level, parity, the same task
output from the torch and onnxruntime runners, session options, refusals that leave nothing."""

from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_artifact
from deploylm.errors import ConfigError, GateError, ParityError
from deploylm.optimize.export_onnx import export
from deploylm.optimize.gate import GateOptions

LENIENT = dict(allow_slower=True)  # speed is benchmarked, not asserted, in tests


def write_sst2(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    words = ["a great and moving film", "a dull , tedious mess", "funny and warm", "boring and far too long"]
    for split, n in (("train", 32), ("dev", 32)):
        rows = ["sentence\tlabel"] + [f"{words[i % 4]} {i}\t{i % 2}" for i in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return root, build_tiny_artifact(root / "cls", labels=["0", "1"], seed=1), write_sst2(root / "data")


@pytest.fixture(scope="module")
def fused(env):
    root, art, data = env
    return export(art, root / "o2", optimize="O2", gate=GateOptions(data=str(data), **LENIENT))


def _ops(path):
    import onnx

    return [n.op_type for n in onnx.load(str(path / "model.onnx")).graph.node]


def test_o2_fuses_attention_and_keeps_tokenizer(fused):
    from deploylm.evaluation import load_tokenizer

    ops = _ops(fused.path)
    # two layers: the first fused into Attention, the last one computed for the first token only
    assert ops.count("Attention") == 1 and "SkipLayerNormalization" in ops and "EmbedLayerNormalization" in ops
    assert fused.format == "onnx" and fused.manifest["optimization"]["fused_ops"]["Attention"] == 1
    assert fused.manifest["optimization"]["rewrites"] == ["first-token-last-layer"]
    assert load_tokenizer(fused)("hello world")["input_ids"][0] == 101
    assert fused.manifest["parity"]["random"]["max_abs_diff"] < 1e-3


def test_all_tokens_last_layer_keeps_the_full_graph(env, fused):
    """--all-tokens-last-layer exports the unmodified model: every layer fuses, same logits as the
    first-token graph, which ran fewer matmul rows."""
    from deploylm.runtime import open_runner

    root, art, data = env
    full = export(art, root / "o2-all", optimize="O2", all_tokens_last_layer=True,
                  gate=GateOptions(data=str(data), **LENIENT))
    assert _ops(full.path).count("Attention") == 2 and full.manifest["optimization"]["rewrites"] == []
    rng = np.random.default_rng(7)
    ids = rng.integers(1000, 30000, size=(5, 31))
    mask = np.ones_like(ids)
    mask[1:, 9:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    a, b = open_runner(full).run(batch)["logits"], open_runner(fused).run(batch)["logits"]
    assert np.abs(a - b).max() < 1e-4


@pytest.mark.parametrize("level,expect", [("O1", "MatMul"), ("O3", "FastGelu")])
def test_levels(env, level, expect):
    root, art, data = env
    out = export(art, root / f"lvl-{level}", optimize=level, gate=GateOptions(data=str(data), **LENIENT))
    ops = _ops(out.path)
    assert expect in ops
    assert ("Attention" in ops) == (level != "O1")


def test_dynamic_batch_and_sequence_axes(fused):
    from deploylm.runtime import open_runner

    runner = open_runner(fused)
    for shape in ((1, 5), (7, 40), (3, 128)):
        ids = np.random.default_rng(shape[1]).integers(1000, 30000, size=shape)
        out = runner.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        assert out["logits"].shape == (shape[0], 2)


def test_same_task_output_from_both_backends(env, fused):
    from deploylm.evaluation import predict

    _, art, _ = env
    texts = ["a gripping, beautifully acted film", "a dull and tedious mess", "ok", "x " * 60]
    torch_preds, onnx_preds = predict(art, texts), predict(fused, texts)
    assert [p["label"] for p in torch_preds] == [p["label"] for p in onnx_preds]
    assert np.allclose([p["score"] for p in torch_preds], [p["score"] for p in onnx_preds], atol=1e-4)


def test_token_classification_exports_per_token_logits(tmp_path):
    from deploylm.evaluation import predict

    ner = build_tiny_artifact(tmp_path / "ner", "token-classification", labels=["O", "B-PER", "I-PER"])
    conll = tmp_path / "conll"
    conll.mkdir()
    sent = "\n".join(f"{w} NNP B-NP {t}" for w, t in (("John", "B-PER"), ("Smith", "I-PER"), ("runs", "O")))
    for name in ("eng.train", "eng.testa"):
        (conll / name).write_text("-DOCSTART- -X- -X- O\n\n" + (sent + "\n\n") * 8)
    out = export(ner, tmp_path / "ner-onnx", optimize="O2", gate=GateOptions(data=str(conll), **LENIENT))
    texts = ["John Smith lives in Paris", "nothing here"]
    assert [p["tags"] for p in predict(ner, texts)] == [p["tags"] for p in predict(out, texts)]


def test_session_options_are_set(fused):
    from deploylm import settings
    from deploylm.runtime import open_runner

    runner = open_runner(fused)
    so = runner.session.get_session_options()
    assert so.intra_op_num_threads == settings.num_threads() and so.inter_op_num_threads == 1
    disabled = so.get_session_config_entry("optimization.disable_specified_optimizers").split(";")
    assert disabled == list(settings.DEFAULT_ORT_DISABLED_OPTIMIZERS)
    assert runner.input_names == ("input_ids", "attention_mask", "token_type_ids")


def test_broken_variant_fails_parity_and_leaves_nothing(env):
    """A variant with perturbed weights is refused with the measured difference; no artifact, no staging."""
    from deploylm.optimize import export_onnx
    from deploylm.optimize.gate import build_gated_variant

    root, art, data = env
    out = root / "broken"

    def write_perturbed(dest):
        info = export_onnx.build_onnx_files(art, dest, None, {"model_type": "bert"})
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(dest / "model.onnx"))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.ndim == 2:
                init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, 0.5, w.shape).astype(np.float32), init.name))
        onnx.save(model, str(dest / "model.onnx"))
        return info

    with pytest.raises(ParityError, match=r"max abs logit difference \d"):
        build_gated_variant(art, out, write_perturbed, stage="export", fmt="onnx", method="onnx", config={},
                            gate=GateOptions(data=str(data), **LENIENT))
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".broken")]


def test_slower_variant_is_refused_by_the_gate_and_leaves_nothing(env, fused):
    """A deliberately slow but exact variant of the fused ONNX artifact (its graph plus a matmul chain
    multiplied by zero, ~16 GFLOP a call: hundreds of times the parent) passes parity and is refused by the gate's speed check; allow_slower keeps it."""
    import shutil

    import onnx
    from onnx import helper, numpy_helper

    from deploylm.optimize.gate import build_gated_variant

    root, art, data = env

    def write_slow(dest):
        for f in fused.path.iterdir():
            if f.name != "manifest.json":
                shutil.copy2(f, dest / f.name)
        m = onnx.load(str(dest / "model.onnx"))
        g = m.graph
        w = numpy_helper.from_array((np.eye(1024, dtype=np.float32) * 0.5), "slow_w")
        g.initializer.extend([w, numpy_helper.from_array(np.zeros((256, 1024), np.float32), "slow_zero"),
                              numpy_helper.from_array(np.array([0.0], np.float32), "slow_scale")])
        nodes = [helper.make_node("Cast", ["input_ids"], ["slow_f"], to=onnx.TensorProto.FLOAT),
                 helper.make_node("ReduceSum", ["slow_f"], ["slow_s"], keepdims=1),
                 helper.make_node("Add", ["slow_zero", "slow_s"], ["slow_x0"])]
        for i in range(30):  # depends on the input, so constant folding cannot remove it
            nodes += [helper.make_node("MatMul", [f"slow_x{i}", "slow_w"], [f"slow_m{i}"]),
                      helper.make_node("Tanh", [f"slow_m{i}"], [f"slow_x{i + 1}"])]
        nodes += [helper.make_node("ReduceSum", ["slow_x30"], ["slow_r"], keepdims=0),
                  helper.make_node("Mul", ["slow_r", "slow_scale"], ["slow_zero_out"])]
        old = g.output[0].name
        for node in g.node:
            node.output[:] = [o if o != old else "pre_logits" for o in node.output]
        nodes.append(helper.make_node("Add", ["pre_logits", "slow_zero_out"], [old]))
        g.node.extend(nodes)
        onnx.save(m, str(dest / "model.onnx"))
        return {}

    out = root / "slow"
    kw = dict(stage="export", fmt="onnx", method="onnx", config={})
    with pytest.raises(GateError, match="slower than its parent"):
        build_gated_variant(fused, out, write_slow, gate=GateOptions(data=str(data), rounds=3, bench_samples=32), **kw)
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".slow")]
    kept = build_gated_variant(fused, out, write_slow, gate=GateOptions(data=str(data), rounds=3, bench_samples=32,
                                                                       allow_slower=True), **kw)
    assert kept.manifest["gate"]["speed_ratio"] < 1.0


def test_export_refuses_bad_input(env, fused, tmp_path):
    root, art, data = env
    with pytest.raises(ConfigError, match="Supported formats: onnx"):
        export(art, tmp_path / "x", fmt="tflite")
    with pytest.raises(ConfigError, match="O1, O2, O3"):
        export(art, tmp_path / "x", optimize="O9")
    with pytest.raises(ConfigError, match="already 'onnx'"):
        export(fused, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_export_and_quantize(env, tmp_path):
    import subprocess
    import sys

    root, art, data = env
    cmd = [sys.executable, "-m", "deploylm.cli"]
    bad = subprocess.run([*cmd, "quantize", str(art.path), "--method", "int3", "--output", str(tmp_path / "q")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Valid methods: dynamic-int8, static-int8, bf16" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "q").exists()
    ok = subprocess.run([*cmd, "quantize", str(art.path), "--method", "dynamic-int8", "--output", str(tmp_path / "q"),
                         "--data", str(data), "--allow-slower"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "dynamic-int8" in ok.stdout and (tmp_path / "q" / "manifest.json").is_file()
