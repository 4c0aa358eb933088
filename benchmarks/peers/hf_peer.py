"""transformers as a generation peer, in its own process (main venv), printing one JSON document
(peer_common.py's shape). Greedy, fp32, EOS suppressed so every request yields exactly --max-tokens.

    python benchmarks/peers/hf_peer.py --model DIR --mode generate|static-batch|generate-batch --batch N \
        --prompts FILE.jsonl --max-tokens 128 --threads 2 --rounds 1

- generate: `model.generate` one request at a time (batch 1); token times from a streamer.
- static-batch: `generate` over batches of --batch prompts (left padded); every row of a batch shares the
  step times, and the batch after it starts when the whole batch is done.
- generate-batch: transformers 5's continuous batching (`init_continuous_batching` manager, the engine
  behind `generate_batch`) fed by --batch closed-loop clients; token times from its `record_timestamps`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque

import peer_common as pc

CB_MAX_BATCH_TOKENS = 2048  # per-step token budget of continuous batching: llama.cpp's n_batch here


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="transformers generation peer")
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=("generate", "static-batch", "generate-batch"), default="generate")
    ap.add_argument("--batch", type=int, default=1, help="static batch size / concurrent clients")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes before the rounds")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.max_tokens < 1 or args.rounds < 1 or args.threads < 1:
        ap.error("--batch, --max-tokens, --rounds and --threads must be >= 1")
    if args.mode == "generate" and args.batch != 1:
        ap.error("--mode generate is batch 1; use static-batch or generate-batch for --batch > 1")
    return args


class StepClock:
    """A streamer that only notes when each decoding step's tokens exist. generate() first hands it the
    prompt (skipped), then one tensor per step for the whole batch."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(pc.now())

    def end(self):
        pass


def _generate(model, tok, texts, max_tokens, torch):
    """One generate() call on a batch of texts: (start, step times, [token ids per row], [prompt lengths])."""
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    clock = StepClock()
    start = pc.now()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                             pad_token_id=tok.pad_token_id, streamer=clock)
    width = enc["input_ids"].shape[1]
    rows = [out[i, width:].tolist() for i in range(len(texts))]
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    return start, [t - start for t in clock.times], rows, lengths


def run_static(model, tok, prompts, batch, max_tokens, torch) -> dict:
    requests, round_start = [], pc.now()
    for first in range(0, len(prompts), batch):
        idx = list(range(first, min(first + batch, len(prompts))))
        start, times, rows, lengths = _generate(model, tok, [prompts[i] for i in idx], max_tokens, torch)
        for i, row, n in zip(idx, rows, lengths):
            requests.append(pc.request_record(i, int(n), start - round_start, times[: len(row)], row))
    return pc.round_record(pc.now() - round_start, requests)


def _cb_request(manager, ids, max_tokens):
    # eos -1: no end-of-sequence, so each request yields exactly max_tokens like the other peers
    return manager.add_request(input_ids=ids, max_new_tokens=max_tokens, record_timestamps=True, eos_token_id=-1)


def run_continuous(manager, ids, clients, max_tokens) -> dict:
    """--batch closed-loop clients: a finished request is replaced by the next prompt at once."""
    pending, inflight, requests = deque(range(len(ids))), {}, []
    round_start = pc.now()

    def submit():
        i = pending.popleft()
        t0 = pc.now()
        inflight[_cb_request(manager, ids[i], max_tokens)] = (i, t0)

    while pending and len(inflight) < clients:
        submit()
    while inflight:
        result = manager.get_result(timeout=60)
        if result is None:
            if not manager.is_running():
                raise RuntimeError("transformers' continuous batching thread stopped")
            continue
        if not result.is_finished() or result.request_id not in inflight:
            continue
        if result.error:
            raise RuntimeError(f"continuous batching request failed: {result.error}")
        i, t0 = inflight.pop(result.request_id)
        times = [t - t0 for t in (result.timestamps or [])]
        requests.append(pc.request_record(i, len(ids[i]), t0 - round_start, times, list(result.generated_tokens)))
        if pending:
            submit()
    return pc.round_record(pc.now() - round_start, requests)


def load(model_dir, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"  # decoder-only batches: the new token must be the last column
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return torch, tok, model


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # before torch starts its pool
    prompts = pc.read_prompts(args.prompts)
    t0 = pc.now()
    torch, tok, model = load(args.model, args.threads)
    load_s = pc.now() - t0
    settings = {"dtype": "float32", "greedy": True, "eos": "suppressed", "attn": model.config._attn_implementation}
    rounds = []
    if args.mode == "generate-batch":
        rounds = _rounds_continuous(model, tok, prompts, args, settings, torch)
    else:
        batch = 1 if args.mode == "generate" else args.batch
        for _ in range(args.warmup):
            _generate(model, tok, prompts[:batch], min(8, args.max_tokens), torch)
        rounds = [run_static(model, tok, prompts, batch, args.max_tokens, torch) for _ in range(args.rounds)]
    import transformers

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    pc.emit(pc.document("hf", args.mode, model=args.model, threads=args.threads, concurrency=args.batch,
                        max_tokens=args.max_tokens, load_s=load_s, rounds=rounds, weight_bytes=weight_bytes,
                        settings=settings, versions={"torch": torch.__version__,
                                                     "transformers": transformers.__version__}))
    return 0


def _rounds_continuous(model, tok, prompts, args, settings, torch) -> list[dict]:
    from transformers import ContinuousBatchingConfig, GenerationConfig

    gen = GenerationConfig(do_sample=False, max_new_tokens=args.max_tokens, eos_token_id=-1,
                           pad_token_id=tok.pad_token_id)
    ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    # Sized for the workload: left to itself on CPU the cache takes 90 % of free RAM (10 GB here).
    page = 256
    per_request = -(-(max(map(len, ids)) + args.max_tokens) // page)
    cb = ContinuousBatchingConfig(page_size=page, num_blocks=args.batch * per_request + 1,
                                  max_batch_tokens=CB_MAX_BATCH_TOKENS, max_requests_per_batch=args.batch)
    settings.update(page_size=page, num_blocks=cb.num_blocks, max_batch_tokens=CB_MAX_BATCH_TOKENS)
    rounds = []
    with torch.inference_mode(), model.continuous_batching_context_manager(
            generation_config=gen, continuous_batching_config=cb, block=True, timeout=10) as manager:
        settings["attn"] = model.config._attn_implementation
        for _ in range(args.warmup):
            run_continuous(manager, ids[: args.batch], args.batch, min(8, args.max_tokens))
        for _ in range(args.rounds):
            rounds.append(run_continuous(manager, ids, args.batch, args.max_tokens))
    return rounds


if __name__ == "__main__":
    sys.exit(main())
