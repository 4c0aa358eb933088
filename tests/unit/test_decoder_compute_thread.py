"""Decoder loads, steps and sampling run on the process's one torch thread, whichever thread asks
(why: runtime/compute.py; a model loaded on one thread and stepped on another ran several times slower)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from fake_decoder_runner import FakeRunner
from tiny_decoders import make_tiny_decoder, tiny_tokenizer

from deploylm.generation.engine import DecoderEngine
from deploylm.generation.scheduler import SchedulerConfig
from deploylm.generation.types import GenerationRequest, SamplingParams, SeqChunk, StepBatch
from deploylm.runtime import decoder_runner
from deploylm.runtime.compute import THREAD_PREFIX
from deploylm.runtime.decoder_runner import TorchDecoderRunner


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_decoder("llama", tmp_path_factory.mktemp("llama") / "m")


def _recording_model(path, seen: list[str]):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # The embedding: the runner swaps the linears (and their hooks) for its own, and with its C++ ops it calls
    # no norm module either; every forward still looks its tokens up through the embedding module.
    model.model.embed_tokens.register_forward_pre_hook(lambda *_: seen.append(threading.current_thread().name))
    return model


def test_steps_run_on_the_compute_thread_from_any_caller(tiny_path):
    seen: list[str] = []
    runner = TorchDecoderRunner(_recording_model(tiny_path, seen), "fp32")
    runner.step(StepBatch(chunks=[SeqChunk(1, [5, 6, 7], 0, True)], reserve={1: 16}))
    worker = threading.Thread(target=runner.step, args=(StepBatch(chunks=[SeqChunk(1, [8], 3, True)]),))
    worker.start()
    worker.join()
    assert len(seen) == 2 and all(name.startswith(THREAD_PREFIX) for name in seen), seen


def test_from_artifact_loads_on_the_compute_thread(tiny_path, monkeypatch):
    loaded_on: list[str] = []

    def load(path, backend):
        loaded_on.append(threading.current_thread().name)
        return _recording_model(path, [])

    monkeypatch.setattr(decoder_runner, "load_causal_lm", load)
    art = SimpleNamespace(path=tiny_path, manifest={}, max_length=64)
    runner = TorchDecoderRunner.from_artifact(art)
    assert runner.max_context == 64
    assert len(loaded_on) == 1 and loaded_on[0].startswith(THREAD_PREFIX), loaded_on


def test_the_engine_samples_on_the_compute_thread():
    stepped: list[str] = []
    runner = FakeRunner(kv_budget=256)
    runner.on_step = lambda *_: stepped.append(threading.current_thread().name)
    engine = DecoderEngine(runner, tiny_tokenizer(), SchedulerConfig(kv_tokens=256, block_size=8))
    sampled: list[str] = []
    real_sample = engine.sampler.sample

    def sample(*args, **kwargs):
        sampled.append(threading.current_thread().name)
        return real_sample(*args, **kwargs)

    engine.sampler.sample = sample
    engine.start()
    try:
        params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
        events = list(engine.iterate(GenerationRequest(engine.new_request_id(), [5, 6, 7], params)))
    finally:
        engine.close()
    assert events[-1].finish_reason == "length"
    assert stepped and sampled
    assert all(name.startswith(THREAD_PREFIX) for name in stepped + sampled), (stepped, sampled)
