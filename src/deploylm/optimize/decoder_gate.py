"""The gate a decoder variant (weight-int8, bf16) passes before it becomes an artifact, measured side by side
with its fp32 parent on this machine, both as transformers models:

- perplexity on held-out text: the first N unique contexts of SQuAD v1.1 dev in file order (Wikipedia
  paragraphs), each cut into windows of the model's context or 512 tokens, token-weighted mean NLL;
- greedy-token agreement: a fixed prompt set, N new tokens each, EOS ignored so both sides make as many;
- decode speed: tokens/s of greedy batch-1 decoding through the decoder runner the server uses (so a variant is
  judged on the kernels it will be served with: a bf16 model that is fast in a plain transformers loop can still
  be slow in the runner), parent and variant in alternating rounds.

The agreement decodes are the first speed rounds (round r decodes prompt r mod prompts), so no token is
generated only to be timed. torch and transformers are imported inside functions: options are plain data.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, GateError
from .speed_verdict import is_slower, summarise  # is_slower: the one rule, for both gates

PROMPTS = (
    "The history of the printing press begins",
    "Photosynthesis is the process by which plants",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three most important things to know about the French Revolution are",
    "Once upon a time, in a small village by the sea,",
    "To make a good cup of tea, you should first",
    "The difference between a virus and a bacterium is that",
    "Water boils at a lower temperature on a mountain because",
)
MIN_ROUNDS = 5
SQUAD_DEV_FILE = "dev-v1.1.json"


@dataclass(frozen=True)
class DecoderGateOptions:
    data: str | None = None  # a SQuAD-format JSON file, or a folder holding dev-v1.1.json; default: data_dir()
    ppl_texts: int = 16
    window: int = 512  # tokens per perplexity window (capped by the model's context)
    prompts: int = 8
    new_tokens: int = 32
    rounds: int = 8  # speed rounds per model; at least MIN_ROUNDS, at least `prompts`
    max_ppl_increase: float = 2.0  # percent of the parent's perplexity
    allow_ppl_increase: bool = False
    allow_slower: bool = False

    def __post_init__(self):
        if self.max_ppl_increase < 0:
            raise ConfigError(f"--max-ppl-increase is a percentage >= 0 (2 means 2 %), not {self.max_ppl_increase}.")
        if self.ppl_texts < 1:
            raise ConfigError(f"--ppl-texts must be at least 1, not {self.ppl_texts}.")
        if not 1 <= self.prompts <= len(PROMPTS):
            raise ConfigError(f"The gate has {len(PROMPTS)} fixed prompts; prompts must be 1..{len(PROMPTS)}, "
                              f"not {self.prompts}.")
        if self.new_tokens < 2 or self.window < 2:
            raise ConfigError("The gate's new tokens per prompt and perplexity window must be at least 2.")
        if self.rounds < MIN_ROUNDS:
            raise ConfigError(f"The speed verdict needs at least {MIN_ROUNDS} rounds, not {self.rounds}.")


def squad_file(data: str | None) -> Path:
    from ..settings import data_dir

    if data is None:
        root = data_dir()
        if root is None:
            raise DataError("No data directory found for the perplexity texts: set DEPLOYLM_DATA_DIR to the folder "
                            "holding squad_v1.1/, or pass --data with a SQuAD-format JSON file.")
        path = root / "squad_v1.1" / SQUAD_DEV_FILE
    else:
        path = Path(data)
        path = path / SQUAD_DEV_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"The perplexity texts are read from SQuAD v1.1 dev contexts, and {path} does not exist. "
                        "Pass --data with a SQuAD-format JSON file (or its folder), or set DEPLOYLM_DATA_DIR.")
    return path


def squad_contexts(path: Path, n: int) -> list[str]:
    """The first n unique paragraph contexts of a SQuAD-format file, in file order."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        contexts = (p["context"] for a in articles for p in a["paragraphs"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not SQuAD-format JSON (data -> paragraphs -> context): {exc}") from None
    texts = list(dict.fromkeys(c for c in contexts if c.strip()))[:n]
    if len(texts) < n:
        raise DataError(f"{path} has only {len(texts)} unique contexts; --ppl-texts asked for {n}.")
    return texts


def model_context(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(cfg, "max_position_embeddings", None) or 512)


def perplexity(model, tokenizer, texts: list[str], window: int) -> dict:
    """exp(token-weighted mean NLL) over every text's non-overlapping windows (labels = inputs); also the
    model's top-1 prediction at every scored position (to compare two models on the same text)."""
    import torch

    window = min(window, model_context(model))
    nll, tokens, top1 = 0.0, 0, []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text)["input_ids"]
            for start in range(0, len(ids), window):
                chunk = ids[start:start + window]
                if len(chunk) < 2:
                    continue
                x = torch.tensor([chunk])
                out = model(input_ids=x, labels=x)  # loss: mean over len - 1 predicted tokens, in fp32
                nll += float(out.loss) * (len(chunk) - 1)
                tokens += len(chunk) - 1
                top1 += out.logits[0, :-1].argmax(-1).tolist()
    if tokens == 0:
        raise DataError("The perplexity texts gave no token to predict.")
    return {"perplexity": math.exp(nll / tokens), "mean_nll": nll / tokens, "tokens": tokens, "window": window,
            "top1": top1}


def greedy_decode(runner, prompt_ids: list[int], new_tokens: int) -> tuple[list[int], float]:
    """(new token ids, seconds of the decode steps after the prefill): batch 1, argmax, EOS ignored, through the
    decoder runner the server runs (its kernels, fused layers, KV slabs and thread count), one step per token."""
    from ..generation.types import SeqChunk, StepBatch

    seq = 1
    logits = runner.step(StepBatch([SeqChunk(seq, list(prompt_ids), 0, True)],
                                   reserve={seq: len(prompt_ids) + new_tokens}))
    ids = [int(logits[0].argmax())]
    t0 = time.perf_counter()
    for i in range(new_tokens - 1):
        logits = runner.step(StepBatch([SeqChunk(seq, [ids[-1]], len(prompt_ids) + i, True)]))
        ids.append(int(logits[0].argmax()))
    seconds = time.perf_counter() - t0
    runner.step(StepBatch([], free=[seq]))
    return ids, seconds


def agreement(parent_runs: list[list[int]], variant_runs: list[list[int]]) -> dict:
    """Share of positions identical before the first divergence of each prompt, and at all positions."""
    total = sum(len(p) for p in parent_runs)
    divergence, same = [], 0
    for p, v in zip(parent_runs, variant_runs):
        first = next((i for i, (a, b) in enumerate(zip(p, v)) if a != b), None)
        divergence.append(first)
        same += sum(a == b for a, b in zip(p, v))
    prefix = sum(len(p) if d is None else d for p, d in zip(parent_runs, divergence))
    return {"to_first_divergence": round(prefix / total, 4), "overall": round(same / total, 4),
            "first_divergence": divergence, "identical_prompts": sum(d is None for d in divergence)}


def decode_rounds(runners: dict, prompt_ids: list[list[int]], new_tokens: int, rounds: int) -> dict:
    """Alternating-order rounds (ABBA); round r decodes prompt r mod len(prompts) on every model.
    Returns the tokens of each model's first pass over the prompts and tokens/s per round."""
    for runner in runners.values():  # warm-up: allocator, kernels' packing caches; not counted
        greedy_decode(runner, prompt_ids[0], 4)
    tokens = {k: [] for k in runners}
    speed = {k: [] for k in runners}
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for key in order:
            ids, seconds = greedy_decode(runners[key], prompt_ids[r % len(prompt_ids)], new_tokens)
            if r < len(prompt_ids):
                tokens[key].append(ids)
            speed[key].append((new_tokens - 1) / seconds)
    return {"tokens": tokens, "tokens_per_s": speed}


def run_decoder_gate(parent, variant, tokenizer, opts: DecoderGateOptions, backend: str = "variant") -> dict:
    """Measure variant against parent (both transformers causal LMs, eval mode); the gate record. Perplexity
    uses transformers' forward; agreement and speed then wrap both models in decoder runners (which fuse and
    re-lay their linears in place: the models are the gate's to consume)."""
    import torch

    from ..runtime.decoder_runner import TorchDecoderRunner
    from ..settings import num_threads

    torch.set_num_threads(num_threads())
    path = squad_file(opts.data)
    texts = squad_contexts(path, opts.ppl_texts)
    t0 = time.perf_counter()
    ppl_p = perplexity(parent, tokenizer, texts, opts.window)
    ppl_v = perplexity(variant, tokenizer, texts, opts.window)
    t1 = time.perf_counter()
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS[:opts.prompts]]
    runners = {"parent": TorchDecoderRunner(parent, "fp32", tokenizer),
               "variant": TorchDecoderRunner(variant, backend, tokenizer)}
    runs = decode_rounds(runners, prompt_ids, opts.new_tokens,
                         max(opts.rounds, opts.prompts))
    t2 = time.perf_counter()
    tps = runs["tokens_per_s"]
    same_top1 = sum(a == b for a, b in zip(ppl_p["top1"], ppl_v["top1"])) / ppl_p["tokens"]
    ratios = [v / p for p, v in zip(tps["parent"], tps["variant"])]
    increase = 100.0 * (ppl_v["perplexity"] / ppl_p["perplexity"] - 1.0)
    return {
        "kind": "decoder",
        "perplexity": {"data": str(path), "texts": len(texts), "selection": "first unique contexts in file order",
                       "tokens": ppl_p["tokens"], "window": ppl_p["window"],
                       "parent": round(ppl_p["perplexity"], 4), "variant": round(ppl_v["perplexity"], 4),
                       "increase_percent": round(increase, 3),
                       "top1_agreement": round(same_top1, 4)},  # same next-token prediction on the parent's text
        "greedy": {"prompts": len(prompt_ids), "new_tokens": opts.new_tokens,
                   **agreement(runs["tokens"]["parent"], runs["tokens"]["variant"])},
        "speed": {"batch_size": 1, "path": "deploylm's decoder runner, as served (one step per token)",
                  "new_tokens": opts.new_tokens, "threads": num_threads(),
                  "parent_tokens_per_s": round(statistics.median(tps["parent"]), 2),
                  "variant_tokens_per_s": round(statistics.median(tps["variant"]), 2), **summarise(ratios)},
        "speed_ratio": round(statistics.median(ratios), 3),
        "seconds": {"perplexity": round(t1 - t0, 1), "decode": round(t2 - t1, 1)},
        "options": asdict(opts),
    }


def judge_decoder(record: dict, opts: DecoderGateOptions, what: str) -> None:
    """GateError when perplexity rises more than allowed or the variant is slower than its parent."""
    ppl, speed, problems = record["perplexity"], record["speed"], []
    if ppl["increase_percent"] > opts.max_ppl_increase and not opts.allow_ppl_increase:
        problems.append(f"perplexity rose {ppl['increase_percent']:.2f} % ({ppl['parent']:.3f} -> {ppl['variant']:.3f} "
                        f"on {ppl['texts']} texts, {ppl['tokens']} tokens), more than --max-ppl-increase "
                        f"{opts.max_ppl_increase:g} %")
    if is_slower(speed) and not opts.allow_slower:
        problems.append(f"it decodes slower than its parent in every one of {speed['rounds']} rounds "
                        f"({speed['variant_tokens_per_s']} vs {speed['parent_tokens_per_s']} tokens/s at batch 1, "
                        f"ratio {speed['ratio_min']:.2f}..{speed['ratio_max']:.2f}x)")
    if problems:
        raise GateError(f"Refused {what}: {'; and '.join(problems)}. No artifact was written. Pass "
                        "--allow-ppl-increase / --allow-slower to keep it anyway, or try another method.")
