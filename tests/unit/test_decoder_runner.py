"""The torch decoder runner on tiny random Llama / Qwen2 / Gemma3 models: greedy tokens identical to transformers'
`generate` for every prompt, whether run alone or packed with others (chunked prefill, decode of several
sequences, preemption and prefix-cache restores in one engine)."""

from __future__ import annotations

import pytest
import torch

from deploylm.generation.engine import DecoderEngine
from deploylm.generation.scheduler import SchedulerConfig
from deploylm.generation.types import GenerationRequest, SamplingParams, SeqChunk, StepBatch
from deploylm.runtime.decoder_runner import TorchDecoderRunner
from tiny_decoders import ARCHS, make_tiny_decoder

PROMPTS = ["Hello world, this is", "你好，世界 😀 and the quick brown fox jumps over the lazy dog", "Paris",
           "A gripping, beautifully acted film. " * 3]
NEW = 12


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_decoder(request.param, tmp_path_factory.mktemp(request.param) / "m")
    tok = AutoTokenizer.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    expected = []
    for text in PROMPTS:
        ids = tok(text).input_ids
        out = ref.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
        expected.append((ids, out[0, len(ids):].tolist()))
    return request.param, path, tok, expected


def _runner(path, tok, backend="fp32"):
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if backend == "bf16" else torch.float32
    return TorchDecoderRunner(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), backend, tok)


def _greedy(engine, ids):
    params = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)
    events = list(engine.iterate(GenerationRequest(engine.new_request_id(), ids, params)))
    assert events[-1].finish_reason == "length"
    return [t for e in events for t in e.token_ids]


def _each_alone_matches(runner, tok, expected, arch) -> None:
    engine = DecoderEngine(runner, tok, SchedulerConfig(kv_tokens=1024, block_size=8)).start()
    try:
        for ids, want in expected:
            assert _greedy(engine, ids) == want, arch
    finally:
        engine.close()


def test_alone_matches_generate(tiny):
    arch, path, tok, expected = tiny
    _each_alone_matches(_runner(path, tok), tok, expected, arch)


def test_packed_chunked_preempted_matches_generate(tiny):
    """A small KV budget and token budget force chunked prefill, mixed prefill/decode steps and preemption."""
    import threading

    arch, path, tok, expected = tiny
    cfg = SchedulerConfig(kv_tokens=96, block_size=8, max_num_seqs=4, max_step_tokens=12, growth_blocks=1)
    engine = DecoderEngine(_runner(path, tok), tok, cfg).start()
    got: dict[int, list[int]] = {}
    try:
        threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, _greedy(engine, expected[k][0])))
                   for k in range(len(expected))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert {k: v for k, v in got.items()} == {k: e[1] for k, e in enumerate(expected)}, arch
        assert engine.scheduler.preemptions > 0  # the budget was small enough to exercise recompute
    finally:
        engine.close()


def test_prefix_cache_restore_matches(tiny):
    arch, path, tok, expected = tiny
    engine = DecoderEngine(_runner(path, tok), tok, SchedulerConfig(kv_tokens=1024, block_size=4)).start()
    try:
        ids, want = expected[3]  # long enough for several full blocks
        assert _greedy(engine, ids) == want
        first_hits = engine.scheduler.cache.hit_tokens
        assert _greedy(engine, ids) == want  # second time: the prompt's full blocks come from the cache
        assert engine.scheduler.cache.hit_tokens - first_hits >= len(ids) - 4
    finally:
        engine.close()


def test_bf16_close_to_fp32(tiny):
    arch, path, tok, expected = tiny
    ids = expected[1][0]
    logits = {}
    for backend in ("fp32", "bf16"):
        r = _runner(path, tok, backend)
        logits[backend] = r.step(StepBatch([SeqChunk(1, ids, 0, True)], reserve={1: 64}))[0]
    assert logits["bf16"].dtype == torch.float32
    ref = logits["fp32"]
    # bf16 keeps 8 bits of mantissa: a relative error of a few percent of the logit scale through 2 layers
    assert (logits["bf16"] - ref).abs().max() <= 0.05 * ref.abs().max() + 0.05


def test_bf16_weights_with_the_float_kernel_compute_in_fp32(tiny):
    """With deploylm's float linear, a bf16 model keeps only its linears' weights in bf16 (packed panels) and
    computes everything else in fp32: its logits are those of an fp32 model whose linear weights are the same
    bf16-rounded values, to fp32 rounding, at a prefill chunk and at a decode step."""
    from transformers import AutoModelForCausalLM

    from deploylm.runtime import cpp_kernels
    from deploylm.runtime.decoder_linear import PackedLinear

    from int8_cpu import expected_float_simd

    if not expected_float_simd():
        pytest.skip("the C++ float linear runs only on AVX-512 or AVX2 CPUs: elsewhere bf16 models compute in bf16")
    assert cpp_kernels.float_kernel() is not None, cpp_kernels.build_error()
    arch, path, tok, expected = tiny
    ids = expected[1][0]
    bf16 = _runner(path, tok, "bf16")
    assert bf16.dtype == torch.float32
    panels = [m.packed.dtype for m in bf16.model.modules() if isinstance(m, PackedLinear)]
    assert panels and set(panels) == {torch.bfloat16}
    ref_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for m in ref_model.modules():
        if type(m) is torch.nn.Linear:  # the weights the bf16 artifact holds, in fp32
            m.weight.data = m.weight.data.to(torch.bfloat16).float()
    ref = TorchDecoderRunner(ref_model, "fp32", tok)
    for runner in (bf16, ref):
        runner.step(StepBatch([SeqChunk(1, ids[:-1], 0, False)], reserve={1: 64}))
    want = ref.step(StepBatch([SeqChunk(1, ids[-1:], len(ids) - 1, True)]))[0]
    got = bf16.step(StepBatch([SeqChunk(1, ids[-1:], len(ids) - 1, True)]))[0]
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_chunk_past_capacity_is_refused(tiny):
    arch, path, tok, expected = tiny
    r = _runner(path, tok)
    with pytest.raises(RuntimeError, match="reserve first"):
        r.step(StepBatch([SeqChunk(1, list(range(10)), 0, True)], reserve={1: 8}))


@pytest.mark.parametrize("chunk", [1, 7])
def test_logits_match_full_forward(tiny, chunk):
    """Token by token (chunk 1) and in chunks of 7, past Gemma's 8-token sliding window: every sampled row equals
    transformers' own full-sequence forward at that position."""
    from transformers import AutoModelForCausalLM

    arch, path, tok, expected = tiny
    ids = (expected[3][0] * 2)[:40]
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    r = _runner(path, tok)
    r.step(StepBatch([], reserve={1: 64}))
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        got = r.step(StepBatch([SeqChunk(1, part, start, True)]))[0]
        torch.testing.assert_close(got, want[start + len(part) - 1], atol=1e-4, rtol=1e-4)


def test_llama_shaped_models_take_the_lean_forward_and_others_do_not(tiny, monkeypatch):
    """The lean forward (fused projections) runs Llama and Qwen2; Gemma3's extra norms keep transformers' forward.
    Parity with `generate` for both kinds is what the tests above check."""
    arch, path, tok, expected = tiny
    runner = _runner(path, tok)
    assert (runner._lean is not None) == (arch in ("llama", "qwen2")), arch
    if runner._lean is not None:
        attn = runner.model.model.layers[0].self_attn
        assert not hasattr(attn, "q_proj") and hasattr(attn, "qkv_proj")  # fused, the parts dropped
    monkeypatch.setenv("DEPLOYLM_DECODER_FAST_PATH", "0")
    assert _runner(path, tok)._lean is None


def test_without_the_decode_kernel_matches_generate_too(tiny, monkeypatch):
    """Attention through SDPA per sequence with the C++ norm and rotary ops, and then torch's ops throughout (no
    compiler, or DEPLOYLM_DECODE_KERNEL=0), give the same tokens; by default the runner uses the C++ kernels for
    float32 models."""
    arch, path, tok, expected = tiny
    runner = _runner(path, tok)
    assert runner._kernel is not None  # built by `make install`: see runtime/cpp_kernels.py
    if runner._lean is not None:
        assert runner._lean.ops is runner._kernel
    runner._kernel = None
    _each_alone_matches(runner, tok, expected, arch)
    monkeypatch.setenv("DEPLOYLM_DECODE_KERNEL", "0")
    runner = _runner(path, tok)
    assert runner._kernel is None and (runner._lean is None or runner._lean.ops is None)
    _each_alone_matches(runner, tok, expected, arch)
