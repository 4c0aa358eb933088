"""Weight-int8 and bf16 variants of decoders on tiny random Llama / Qwen2 / Gemma3 models: the int8 linear's error
is the size int8 rounding gives, save/load is exact, the gate measures perplexity, greedy agreement and decode
speed against the fp32 parent, refuses a damaged variant, and writes nothing when it refuses.
Speed is measured by the gate but never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deploylm.artifacts import Artifact
from deploylm.errors import ArtifactError, ConfigError, DataError, GateError
from deploylm.optimize.decoder_gate import DecoderGateOptions, agreement, is_slower, judge_decoder, squad_contexts
from deploylm.optimize.weight_int8 import (FULL_LEVELS, INT8_WEIGHTS, SAFE_LEVELS, Int8Linear, load_int8_model, quantize_linears,
                                           quantize_weight, save_int8)
from tiny_decoders import ARCHS, make_tiny_decoder

CONTEXTS = ["The quick brown fox jumps over the lazy dog near the river bank in the early morning.",
            "Paris is the capital of France. It is known for its museums, its food and its long history.",
            "Hello world, this is a tiny text about tests, tokenizers and very small language models.",
            "A gripping, beautifully acted film about a family, a farm and a long, dry summer.",
            "Emoji and other characters: 😀 🎉 🚀 你好，世界。 The weather is fine today."]


def write_squad(path: Path, contexts: list[str]) -> Path:
    """SQuAD v1.1 layout; the first context is repeated as real SQuAD repeats a paragraph's context per question."""
    paragraphs = [{"context": c, "qas": []} for c in [contexts[0]] + contexts]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from deploylm.models.importer import import_decoder

    root = tmp_path_factory.mktemp("wint8")
    arts = {arch: import_decoder(str(make_tiny_decoder(arch, root / f"hf-{arch}")), root / f"art-{arch}")
            for arch in ARCHS}
    return root, arts, write_squad(root / "squad.json", CONTEXTS)


def fast_gate(data: Path, **kw) -> DecoderGateOptions:
    return DecoderGateOptions(data=str(data), ppl_texts=4, prompts=4, new_tokens=6, rounds=5, allow_slower=True, **kw)


def fp32_model(art: Artifact):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(art.path, dtype=torch.float32).eval()


# --- the int8 linear -------------------------------------------------------------------------------------------

@pytest.fixture(params=["vnni", "torch"])
def int8_kernel(request, monkeypatch):
    """Each int8-linear property on both kernels of optimize/int8_matmul.py: deploylm's C++ kernel (on CPUs with
    AVX-512 VNNI or AVX2; the project's machines have one of them) and torch's fbgemm / weight-only kernels."""
    from int8_cpu import expected_int8_simd

    if request.param == "vnni" and not expected_int8_simd():
        pytest.skip("this CPU has neither AVX-512 VNNI nor AVX2: the C++ int8 kernel is not used here")
    monkeypatch.setenv("DEPLOYLM_INT8_KERNEL", "1" if request.param == "vnni" else "0")
    return request.param


@pytest.mark.parametrize("k,n", [(576, 1536), (1536, 576), (64, 128)])
def test_int8_linear_error_is_int8_rounding_sized(k, n, int8_kernel):
    """Per-row relative error bound 3 %: after the Hadamard rotation a row of weights or of activations is close
    to Gaussian (largest value ~3.2 sigma for these widths). Weights on 129 levels (step <= 3.2 sigma / 64) give a
    relative rms error of about 3.2 / 64 / sqrt(12) ~ 1.5 %, 8-bit activations (step 2 * 3.2 sigma / 255) about
    0.7 %; together ~1.6 %. A token 1000x larger than the others and a single-channel outlier must not change
    that for any row, batched or alone: quantising the whole tensor on one range, or skipping the rotation,
    puts those rows far above 3 %."""
    torch.manual_seed(0)
    linear = nn.Linear(k, n)
    module = Int8Linear.from_float(linear)
    x = torch.randn(12, k)
    x[3] *= 1000.0
    x[5, 7] = 200.0
    with torch.no_grad():
        ref = linear(x)
        batched = module(x)
        alone = torch.cat([module(x[i:i + 1]) for i in range(len(x))])
    for y in (batched, alone):
        rel = (y - ref).norm(dim=1) / ref.norm(dim=1)
        assert rel.max() < 0.03, rel
        assert rel.min() > 0  # really int8 arithmetic, not the fp32 weights


def test_int8_linear_keeps_shape_and_dtype_at_the_boundary(int8_kernel):
    torch.manual_seed(1)
    linear = nn.Linear(64, 32, bias=False)
    module = Int8Linear.from_float(linear)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    y = module(x)
    assert y.shape == (2, 3, 32) and y.dtype == torch.bfloat16
    assert module.bias is None


@pytest.mark.parametrize("levels", [SAFE_LEVELS, FULL_LEVELS])
def test_weights_use_their_levels_and_least_squares_clipping(levels):
    torch.manual_seed(2)
    w = torch.rand(48, 4096) * 2 - 1
    w[0, 0] = 1.5  # a mild outlier: clipping it a little costs less than coarsening 4095 other weights
    q, scale = quantize_weight(w, levels)
    assert q.dtype == torch.int8 and int(q.abs().max()) == levels
    assert torch.equal(scale.bfloat16().float(), scale)  # the plain kernel's bf16 scales lose nothing
    err = ((q.float() * scale[:, None] - w) ** 2).sum(1)
    # the no-clipping candidate: the row's largest magnitude sets the (bf16-rounded) step
    absmax_scale = (w.abs().amax(1, keepdim=True) / levels).bfloat16().float()
    plain = ((torch.round(w / absmax_scale).clamp(-levels, levels) * absmax_scale - w) ** 2).sum(1)
    assert (err <= plain * (1 + 1e-6)).all()
    assert err[0] < (0.97 if levels == SAFE_LEVELS else 0.995) * plain[0]  # finer levels: clipping gains less


def test_full_levels_halve_the_weight_error():
    torch.manual_seed(5)
    w = torch.randn(64, 1024)
    errors = {}
    for levels in (SAFE_LEVELS, FULL_LEVELS):
        q, scale = quantize_weight(w, levels)
        errors[levels] = float((q.float() * scale[:, None] - w).norm() / w.norm())
    assert errors[FULL_LEVELS] < 0.6 * errors[SAFE_LEVELS], errors


@pytest.mark.parametrize("k", [256, 72])  # 72: a width torch's weight-only kernel cannot sum (dequantised path)
def test_extreme_activations_times_extreme_weights_do_not_overflow(int8_kernel, k):
    """All activations at the top of their range against weights all at the top of their levels: no kernel's
    sums saturate (fbgemm's int16 pair sums on CPUs without VNNI only ever see SAFE_LEVELS weights; full-range
    weights on torch's kernels take the weight-only kernel), so the output is the exact product within one
    activation step."""
    n = 8
    for levels in (SAFE_LEVELS, FULL_LEVELS):
        module = Int8Linear.from_int8(torch.full((n, k), levels, dtype=torch.int8), torch.full((n,), 0.01), None)
        x = torch.ones(1, k)
        x[0, 0] = -1e-3  # range [-0.001, 1]: the value 1 quantises to 255
        exact = x @ torch.full((k, n), levels * 0.01)
        assert torch.allclose(module(x), exact, rtol=0.01), (levels, module._matmul.kernel)
        assert torch.allclose(module(x.repeat(5, 1)), exact.repeat(5, 1), rtol=0.01), (levels, module._matmul.kernel)


def test_levels_follow_the_kernel_that_runs_here(int8_kernel):
    module = Int8Linear.from_float(nn.Linear(64, 32))
    assert module.levels == (FULL_LEVELS if int8_kernel == "vnni" else SAFE_LEVELS)


# --- whole models ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_model_keeps_logits_close_and_shrinks(env, arch, tmp_path):
    """Bound 12 % (relative Frobenius error of the logits): each of the model's linears adds ~1.6 % (above);
    two random layers with initializer_range 0.2 amplify it (3-8 % seen across these archs and seeds).
    A wrong scale, rotation or bias shows as errors near 100 %."""
    _, arts, _ = env
    ref = fp32_model(arts[arch])
    n_linears = sum(type(m) is nn.Linear for m in ref.modules())
    embedding = ref.get_input_embeddings().weight.detach().clone()
    model = quantize_linears(fp32_model(arts[arch]))
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == n_linears
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(model.get_input_embeddings().weight, embedding)  # lookups keep the fp32 table
    assert model.get_output_embeddings().tied_to == "model.embed_tokens.weight"
    ids = torch.randint(3, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(ids).logits, model(ids).logits
    assert 0 < float((a - b).norm() / a.norm()) < 0.12
    save_int8(model, tmp_path)
    assert (tmp_path / INT8_WEIGHTS).stat().st_size < 0.6 * (arts[arch].path / "model.safetensors").stat().st_size


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_gives_identical_logits(env, arch, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    _, arts, _ = env
    model = quantize_linears(fp32_model(arts[arch]))
    save_int8(model, tmp_path)
    loaded = load_int8_model(tmp_path)
    ids = torch.randint(3, 400, (1, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
        assert torch.equal(model(ids[:, :1]).logits, loaded(ids[:, :1]).logits)  # the one-token path too
    with safe_open(str(tmp_path / INT8_WEIGHTS), framework="pt") as fh:
        dtypes = {k: fh.get_tensor(k).dtype for k in fh.keys()}
    assert all(dtypes[k] == torch.int8 for k in dtypes if k.endswith(".weight_int8"))
    assert not any(k.endswith("proj.weight") or k == "lm_head.weight" for k in dtypes)  # no fp32 linear weights
    with pytest.raises(OSError):  # plain transformers must refuse it, not load random linears
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_load_refuses_damaged_weights(env, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    _, arts, _ = env
    save_int8(quantize_linears(fp32_model(arts["llama"])), tmp_path)
    path = tmp_path / INT8_WEIGHTS
    with safe_open(str(path), framework="pt") as fh:
        meta, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    key = "model.layers.0.mlp.down_proj.weight_int8"
    save_file({k: v for k, v in state.items() if k != key}, str(path), metadata=meta)
    with pytest.raises(ArtifactError, match="down_proj"):
        load_int8_model(tmp_path)
    state[key] = torch.full_like(state[key], -128)  # int8, but outside the symmetric levels
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ArtifactError, match="outside the symmetric range"):
        load_int8_model(tmp_path)
    with pytest.raises(ArtifactError, match="weight-int8"):
        load_int8_model(arts["llama"].path)


# --- the gate ----------------------------------------------------------------------------------------------------

def test_squad_contexts_are_unique_in_file_order(tmp_path):
    path = write_squad(tmp_path / "s.json", CONTEXTS)
    assert squad_contexts(path, 3) == CONTEXTS[:3]
    with pytest.raises(DataError, match="only 5 unique"):
        squad_contexts(path, 6)


def test_agreement_counts_the_prefix_and_all_positions():
    parent = [[1, 2, 3, 4], [5, 6, 7, 8]]
    variant = [[1, 2, 9, 4], [5, 6, 7, 8]]
    got = agreement(parent, variant)
    assert got["to_first_divergence"] == 0.75  # (2 + 4) / 8
    assert got["overall"] == 0.875  # 7 / 8
    assert got["first_divergence"] == [2, None] and got["identical_prompts"] == 1


def record(increase: float, ratios: list[float]) -> dict:
    return {"perplexity": {"increase_percent": increase, "parent": 10.0, "variant": 10.0 * (1 + increase / 100),
                           "texts": 16, "tokens": 3000},
            "speed": {"ratio_min": min(ratios), "ratio_max": max(ratios), "rounds": len(ratios),
                      "variant_tokens_per_s": 9.0, "parent_tokens_per_s": 10.0}}


def test_verdict_percent_limit_and_slower_only_when_every_round_loses():
    opts = DecoderGateOptions()
    judge_decoder(record(1.9, [0.9, 1.2, 0.95, 0.97, 0.99]), opts, "v")  # under 2 %; won one round
    with pytest.raises(GateError, match=r"rose 2\.50 % .*--max-ppl-increase 2 %"):
        judge_decoder(record(2.5, [1.5] * 5), opts, "v")
    with pytest.raises(GateError, match="slower than its parent in every one of 5 rounds"):
        judge_decoder(record(0.0, [0.9, 0.8, 0.99, 0.7, 0.95]), opts, "v")
    assert is_slower(record(0, [0.99] * 5)["speed"]) and not is_slower(record(0, [0.5, 1.0])["speed"])
    judge_decoder(record(2.5, [0.5] * 5), DecoderGateOptions(allow_ppl_increase=True, allow_slower=True), "v")
    judge_decoder(record(2.5, [1.5] * 5), DecoderGateOptions(max_ppl_increase=3), "v")
    with pytest.raises(ConfigError, match="percentage"):
        DecoderGateOptions(max_ppl_increase=-1)
    with pytest.raises(ConfigError, match="at least 5 rounds"):
        DecoderGateOptions(rounds=3)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_weight_int8_artifact_is_gated_and_served_as_int8(env, arch):
    from deploylm.optimize.quantize import quantize
    from deploylm.runtime.decoder_runner import TorchDecoderRunner

    root, arts, data = env
    out = quantize(arts[arch], root / f"int8-{arch}", "weight-int8", decoder_gate=fast_gate(data))
    art = Artifact.open(out.path)  # checksums verified
    m = art.manifest
    assert m["stage"] == "quantize" and m["method"] == "weight-int8" and m["parent"]["hash"] == arts[arch].hash
    assert m["decoder"]["weights"] == "weight-int8" and m["decoder"]["eos_token_ids"]
    assert INT8_WEIGHTS in m["files"] and "model.safetensors" not in m["files"] and "tokenizer.json" in m["files"]
    opt = m["optimization"]
    assert "lm_head" in opt["int8_linears"] and "model.embed_tokens.weight" in opt["fp32_tensors"]
    assert opt["tied_copies"] == {"lm_head": "model.embed_tokens.weight"}
    gate = m["gate"]
    ppl = gate["perplexity"]
    assert ppl["texts"] == 4 and ppl["tokens"] > 50 and ppl["parent"] > 1 and ppl["variant"] > 1
    assert abs(ppl["increase_percent"]) < 2.0  # within the default limit, or the gate would have refused
    assert 0 < ppl["top1_agreement"] <= 1
    assert gate["greedy"]["prompts"] == 4 and gate["greedy"]["new_tokens"] == 6
    assert 0 <= gate["greedy"]["to_first_divergence"] <= gate["greedy"]["overall"] <= 1
    speed = gate["speed"]
    assert speed["rounds"] == 5 and len(speed["ratios"]) == 5 and speed["parent_tokens_per_s"] > 0
    assert speed["path"].startswith("deploylm's decoder runner")  # judged on the kernels it is served with
    assert speed["ratio_min"] <= speed["ratio_median"] <= speed["ratio_max"]
    assert next(iter(m["metrics"].values()))["perplexity"] == ppl["variant"]
    runner = TorchDecoderRunner.from_artifact(art)
    assert runner.backend == "weight-int8"
    assert any(isinstance(mod, Int8Linear) for mod in runner.model.modules())


def test_bf16_artifact_loads_with_plain_transformers(env):
    from transformers import AutoModelForCausalLM

    from deploylm.optimize.quantize import quantize

    root, arts, data = env
    out = quantize(arts["qwen2"], root / "bf16-qwen2", "bf16", decoder_gate=fast_gate(data))
    assert out.manifest["decoder"]["weights"] == "bf16" and out.manifest["gate"]["kind"] == "decoder"
    model = AutoModelForCausalLM.from_pretrained(out.path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert (out.path / "model.safetensors").stat().st_size < 0.6 * (arts["qwen2"].path / "model.safetensors").stat().st_size


def _sharpened_head_variant(parent: Artifact, dest: Path) -> dict:
    """A damaged variant: int8 like the real one, but the LM head's weights 30x too large, so the random model's
    near-uniform predictions become confident and wrong: perplexity rises far beyond 2 %."""
    model = fp32_model(parent)
    head = nn.Linear(*reversed(model.lm_head.weight.shape), bias=False)
    head.weight.data = model.lm_head.weight.detach() * 30
    model = quantize_linears(model)
    model.lm_head = Int8Linear.from_float(head)
    save_int8(model, dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dest / name).write_bytes((parent.path / name).read_bytes())
    return {"damaged": True}


def test_gate_refuses_a_damaged_variant_and_writes_nothing(env, monkeypatch):
    from deploylm.optimize import decoder_quantize
    from deploylm.optimize.quantize import quantize

    root, arts, data = env
    monkeypatch.setitem(decoder_quantize.HANDLERS, "weight-int8", _sharpened_head_variant)
    with pytest.raises(GateError, match="perplexity rose .* more than --max-ppl-increase 2 %"):
        quantize(arts["llama"], root / "damaged", "weight-int8", decoder_gate=fast_gate(data))
    assert not (root / "damaged").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".damaged")]  # no staging or temp dir left
    kept = quantize(arts["llama"], root / "damaged-kept", "weight-int8",
                    decoder_gate=fast_gate(data, allow_ppl_increase=True))
    assert kept.manifest["gate"]["perplexity"]["increase_percent"] > 10
    assert kept.manifest["optimization"] == {"damaged": True}


def test_methods_and_parents_that_do_not_apply(env, tmp_path):
    from conftest import build_tiny_artifact
    from deploylm.optimize.quantize import quantize

    root, arts, data = env
    for method in ("dynamic-int8", "static-int8", "int4"):
        with pytest.raises(ConfigError, match="Valid methods for decoders: weight-int8, bf16"):
            quantize(arts["llama"], tmp_path / "x", method, decoder_gate=fast_gate(data))
    with pytest.raises(ConfigError, match="--backend onnxruntime does not apply"):
        quantize(arts["llama"], tmp_path / "x", "weight-int8", backend="onnxruntime", decoder_gate=fast_gate(data))
    with pytest.raises(ConfigError, match="encoder options"):
        quantize(arts["llama"], tmp_path / "x", "weight-int8", parity_tolerance=0.5, decoder_gate=fast_gate(data))
    encoder = build_tiny_artifact(tmp_path / "enc")
    with pytest.raises(ConfigError, match=r"weight-int8 is for text-generation.*dynamic-int8, static-int8, bf16"):
        quantize(encoder, tmp_path / "x", "weight-int8")
    int8 = quantize(arts["qwen2"], root / "int8-parent", "weight-int8", decoder_gate=fast_gate(data))
    with pytest.raises(ConfigError, match="holds weight-int8 weights"):
        quantize(int8, tmp_path / "x", "bf16", decoder_gate=fast_gate(data))
    with pytest.raises(DataError, match="SQuAD"):
        quantize(arts["llama"], tmp_path / "x", "bf16", decoder_gate=fast_gate(tmp_path / "missing.json"))
    assert not (tmp_path / "x").exists()


def test_stage_config_carries_the_decoder_gate_options(tmp_path):
    from deploylm.optimize.stages import QuantizeConfig

    cfg = QuantizeConfig(method="weight-int8", ppl_texts=3, max_ppl_increase=1.5, allow_slower=True,
                         data=str(tmp_path / "s.json"))
    opts = cfg.decoder_gate()
    assert (opts.ppl_texts, opts.max_ppl_increase, opts.allow_slower, opts.data) == (3, 1.5, True, str(tmp_path / "s.json"))
    assert QuantizeConfig(method="bf16").decoder_gate().ppl_texts == DecoderGateOptions().ppl_texts


@pytest.mark.parametrize("k,plain", [(576, True), (72, False)])
def test_one_row_takes_the_plain_kernel_only_where_it_is_exact(k, plain, monkeypatch):
    """On torch's kernels: torch's weight-only int8 kernel sums K in steps of 16 (other widths come out wrong), so
    a linear whose input width is not a multiple of 16 keeps fbgemm for single rows too; both are int8-rounding
    accurate."""
    monkeypatch.setenv("DEPLOYLM_INT8_KERNEL", "0")
    torch.manual_seed(3)
    linear = nn.Linear(k, 256)
    module = Int8Linear.from_float(linear)
    assert (module._matmul._plain is not None) is plain
    x = torch.randn(1, k)
    with torch.no_grad():
        ref, y = linear(x), module(x)
    assert 0 < float((y - ref).norm() / ref.norm()) < 0.03
