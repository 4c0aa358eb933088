"""Generation peers without llama.cpp: the registry and the commands it builds, the missing-venv error, parsing
and summarising a peer's document, the shared prompts, and one real run of the transformers peer (batch 1 and
continuous batching) on a tiny random Llama. Timings are recorded, never asserted."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from deploylm.bench import generate_peers as gp
from deploylm.errors import BackendUnavailableError, ConfigError

from deploylm.bench.gen_prompts import benchmark_prompts, level_slices  # noqa: E402
from tiny_decoders import make_tiny_decoder, tiny_tokenizer  # noqa: E402

ARGS = dict(python="py", prompts_file="p.jsonl", max_tokens=8, threads=2, rounds=3)


def test_registry_maps_each_kind_to_its_engine_mode_and_gguf():
    assert set(gp.PEERS) == {"hf", "hf-static", "hf-cb", "llama-cpp", "llama-cpp-q4"}
    assert [gp.PEERS[k].mode for k in ("hf", "hf-static", "hf-cb")] == ["generate", "static-batch", "generate-batch"]
    assert (gp.PEERS["llama-cpp"].quant, gp.PEERS["llama-cpp-q4"].quant) == ("q8_0", "q4_1")
    with pytest.raises(ConfigError, match="hf-cb"):
        gp.peer_spec("vllm")


def test_commands_carry_mode_concurrency_and_threads():
    cmd = gp.peer_command("hf-static", model_dir="M", gguf=None, concurrency=4, **ARGS)
    assert cmd[1].endswith("hf_peer.py")
    assert cmd[cmd.index("--mode") + 1] == "static-batch" and cmd[cmd.index("--batch") + 1] == "4"
    assert cmd[cmd.index("--threads") + 1] == "2" and cmd[cmd.index("--rounds") + 1] == "3"
    par = gp.peer_command("llama-cpp", model_dir=None, gguf="q8.gguf", concurrency=16, **ARGS)
    assert par[1].endswith("llamacpp_peer.py")
    assert (par[par.index("--mode") + 1], par[par.index("--parallel") + 1]) == ("parallel", "16")
    one = gp.peer_command("llama-cpp-q4", model_dir=None, gguf="q4.gguf", concurrency=1, **ARGS)
    assert one[one.index("--mode") + 1] == "single" and one[one.index("--gguf") + 1] == "q4.gguf"


def test_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="hf-static"):  # generate is batch 1: points to the batched peers
        gp.peer_command("hf", model_dir="M", gguf=None, concurrency=4, **ARGS)
    with pytest.raises(ConfigError, match="model_dir"):
        gp.peer_command("hf-cb", model_dir=None, gguf=None, concurrency=4, **ARGS)
    with pytest.raises(ConfigError, match="GGUF"):
        gp.peer_command("llama-cpp", model_dir=None, gguf=None, concurrency=1, **ARGS)
    with pytest.raises(ConfigError, match=">= 1"):
        gp.peer_command("llama-cpp", model_dir=None, gguf="g", concurrency=0, **ARGS)


def test_missing_llama_venv_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYLM_LLAMA_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(BackendUnavailableError, match="build_llama_venv.sh"):
        gp.run_peer("llama-cpp-q4", gguf=tmp_path / "m.gguf", prompts=["hi"], max_tokens=4)


def _doc(rounds):
    return {"schema": gp.SCHEMA, "rounds": rounds, "peak_rss_mb": 512.0, "concurrency": 2, "max_tokens": 3,
            "weight_bytes": 1_000_000_000}


def _req(i, times):
    return {"prompt_index": i, "prompt_tokens": 10 + i, "output_tokens": len(times), "token_times_s": times}


def test_parse_takes_the_last_line_and_rejects_other_output():
    doc = _doc([])
    assert gp.parse_peer_output("loading...\n{not json\n" + json.dumps(doc) + "\n\n") == doc
    with pytest.raises(BackendUnavailableError, match="no JSON"):
        gp.parse_peer_output("Traceback: boom")
    with pytest.raises(BackendUnavailableError, match="generate-peer"):
        gp.parse_peer_output(json.dumps({"schema": "other", "rounds": []}))
    with pytest.raises(BackendUnavailableError, match="rounds"):
        gp.parse_peer_output(json.dumps({"schema": gp.SCHEMA}))


def test_summary_figures_from_hand_made_times():
    rounds = [{"aggregate_tokens_per_s": 12.0, "requests": [_req(0, [0.1, 0.15, 0.2]), _req(1, [0.3, 0.4, 0.5])]},
              {"aggregate_tokens_per_s": 10.0, "requests": []}, {"aggregate_tokens_per_s": 20.0, "requests": []}]
    s = gp.summarize(_doc(rounds))
    assert s["requests"] == 2 and s["prompt_tokens_mean"] == 10.5
    assert s["ttft_p50_ms"] == pytest.approx(200.0)  # first tokens at 0.1 s and 0.3 s
    assert s["itl_p50_ms"] == pytest.approx(75.0)  # gaps 50, 50, 100, 100 ms
    assert s["itl_p99_ms"] == pytest.approx(100.0)
    assert s["decode_tokens_per_s"] == pytest.approx(15.0)  # 2 tokens in 0.1 s and in 0.2 s
    assert (s["aggregate_tokens_per_s"], s["aggregate_tokens_per_s_min"]) == (12.0, 10.0)
    assert s["weight_read_gbps"] == pytest.approx(15.0)  # 1 GB read per token at 15 tokens/s


def test_percentile_agrees_with_numpy():
    xs = list(np.random.default_rng(0).exponential(size=37))
    for q in (0, 50, 90, 99, 100):
        assert gp.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert gp.percentile([], 50) is None


def test_prompts_are_fixed_round_robin_slices_of_the_requested_length(tmp_path):
    words = " ".join(f"word{i}" for i in range(200))
    squad = {"data": [{"paragraphs": [{"context": f"A{a}P{p} " + words} for p in range(2)]} for a in range(3)]}
    squad["data"][1]["paragraphs"][0]["context"] = "too short"
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    tok = tiny_tokenizer()
    prompts = benchmark_prompts(4, 24, tok, squad_path=path)
    assert [p.split()[0] for p in prompts] == ["A0P0", "A2P0", "A0P1", "A1P1"]  # article-major, short one skipped
    assert all(len(tok(p, add_special_tokens=False)["input_ids"]) == 24 for p in prompts)
    assert prompts == benchmark_prompts(4, 24, tok, squad_path=path)
    with pytest.raises(ValueError, match="only 5"):
        benchmark_prompts(6, 24, tok, squad_path=path)


def test_each_level_gets_its_own_prompts_and_the_warm_up_one_no_level_measures():
    slices, total = level_slices([1, 4, 16], 2)
    assert slices == [(1, slice(0, 2)), (4, slice(2, 10)), (16, slice(10, 42))]
    assert total == 43  # 42 measured + the warm-up's
    used = [i for _, part in slices for i in range(total)[part]]
    assert len(used) == len(set(used)) and total - 1 not in used
    assert level_slices([1, 16], lambda c: 4 if c == 1 else c) == ([(1, slice(0, 4)), (16, slice(4, 20))], 21)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_decoder("llama", tmp_path_factory.mktemp("peer") / "llama")


@pytest.mark.parametrize("kind,concurrency", [("hf", 1), ("hf-cb", 2)])
def test_hf_peer_runs_a_tiny_llama_and_yields_max_tokens_per_request(tiny_llama, kind, concurrency):
    prompts = ["The quick brown fox", "Paris is the capital of France.", "Hello world"]
    doc = gp.run_peer(kind, model_dir=tiny_llama, prompts=prompts, max_tokens=5, concurrency=concurrency,
                      threads=1, rounds=1, timeout=300)
    tok = tiny_tokenizer()
    reqs = doc["rounds"][0]["requests"]
    assert [r["prompt_index"] for r in reqs] == [0, 1, 2]
    assert [r["prompt_tokens"] for r in reqs] == [len(tok(p)["input_ids"]) for p in prompts]
    for r in reqs:
        assert r["output_tokens"] == 5 and len(r["tokens"]) == 5  # EOS suppressed: exactly max_tokens
        assert r["token_times_s"] == sorted(r["token_times_s"]) and r["token_times_s"][0] > 0
    assert doc["summary"]["requests"] == 3 and doc["peak_rss_mb"] > 0 and doc["concurrency"] == concurrency
