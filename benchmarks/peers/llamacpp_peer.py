"""llama.cpp as a generation peer, through llama-cpp-python's low-level API, in the llama venv (no deploylm
there). Prints one JSON document (peer_common.py's shape). Greedy, EOS/EOG masked so every request yields
exactly --max-tokens, like the other peers.

    python benchmarks/peers/llamacpp_peer.py --gguf M.gguf --threads 2 --prompts FILE.jsonl \
        --max-tokens 128 --mode single|parallel --parallel 16 --rounds 1
    python benchmarks/peers/llamacpp_peer.py --gguf Q4_1.gguf --quantize-to Q8_0.gguf   # once, cached

--mode parallel is what llama-server does with --parallel N slots: N sequences (seq ids) share one
context, and every `llama_decode` call carries one decode token per generating slot plus prompt tokens of
the slots being filled, up to n_batch. The slots are fed by N closed-loop clients. --mode single is the
same loop with one slot.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections import deque
from dataclasses import dataclass, field

import peer_common as pc

N_BATCH = 2048  # llama-server's default logical batch; llama_decode splits it into n_ubatch pieces
N_UBATCH = 512


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="llama.cpp generation peer")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--mode", choices=("single", "parallel"), default="single")
    ap.add_argument("--parallel", type=int, default=1, help="sequences decoded together (--mode parallel)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes before the rounds")
    ap.add_argument("--quantize-to", help="write --gguf requantised to Q8_0 at this path, print JSON, exit")
    args = ap.parse_args(argv)
    if args.quantize_to is None and not args.prompts:
        ap.error("--prompts is required (unless --quantize-to)")
    if min(args.threads, args.max_tokens, args.parallel, args.rounds) < 1:
        ap.error("--threads, --max-tokens, --parallel and --rounds must be >= 1")
    if args.mode == "single":
        args.parallel = 1
    return args


def quiet_logs(L):
    """Keep llama.cpp's load chatter (hundreds of lines) out of stderr; warnings and errors stay."""
    @L.llama_log_callback
    def callback(level, text, _user):
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            sys.stderr.write(text.decode("utf-8", "replace"))

    L.llama_log_set(callback, ctypes.c_void_p(0))
    return callback  # the caller keeps it alive: ctypes would free the trampoline


def quantize_q8(L, src: str, dst: str, threads: int) -> dict:
    params = L.llama_model_quantize_default_params()
    params.ftype = L.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the packaged model is already Q4_1: dequantise, then Q8_0
    params.nthread = threads
    tmp = f"{dst}.tmp-{os.getpid()}"
    t0 = pc.now()
    rc = L.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0 or not os.path.isfile(tmp):
        raise SystemExit(f"llama_model_quantize({src} -> Q8_0) failed with code {rc}")
    os.replace(tmp, dst)  # never leave a half-written GGUF under the cached name
    return {"quantized": dst, "source": src, "ftype": "Q8_0", "bytes": os.path.getsize(dst), "s": pc.now() - t0}


class Model:
    """One llama.cpp model + context sized for `n_seq` sequences of up to `seq_ctx` tokens each."""

    def __init__(self, L, path: str):
        import numpy as np

        self.L, self.np = L, np
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.eog = np.array([t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self.vocab, t)], dtype=np.int64)
        self.ctx = None

    def open_context(self, threads: int, n_seq: int, seq_ctx: int) -> None:
        """A context for n_seq sequences of up to seq_ctx tokens each (KV split evenly between them)."""
        L = self.L
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max = n_seq * seq_ctx, n_seq
        cp.n_batch, cp.n_ubatch = N_BATCH, N_UBATCH
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = False  # a KV stream per sequence: the prompts share no prefix
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create the context")
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(N_BATCH, 0, 1)
        self.settings = {"n_ctx": L.llama_n_ctx(self.ctx), "n_ctx_seq": L.llama_n_ctx_seq(self.ctx),
                         "n_seq_max": n_seq, "n_batch": N_BATCH, "n_ubatch": N_UBATCH, "kv_unified": False,
                         "greedy": True, "eos": "suppressed", "flash_attn": "llama.cpp default (auto)",
                         "system_info": L.llama_print_system_info().decode()}

    def desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.L.llama_model_desc(self.model, buf, 256)
        return buf.value.decode()

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (self.L.llama_token * (len(raw) + 8))()
        # add_special: BOS only if the GGUF says the model wants one (SmolLM2's does not)
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, False)
        if n < 0:
            raise SystemExit(f"llama_tokenize needs {-n} tokens for a prompt")
        return list(buf[:n])

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, seq_id, wants_logits)."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise SystemExit(f"llama_decode failed with code {rc} (batch of {len(items)} tokens)")

    def greedy(self, batch_index: int) -> int:
        ptr = self.L.llama_get_logits_ith(self.ctx, batch_index)
        logits = self.np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        logits[self.eog] = -self.np.inf
        return int(logits.argmax())

    def clear(self, seq: int) -> None:
        self.L.llama_memory_seq_rm(self.mem, seq, -1, -1)


@dataclass
class Slot:
    seq: int
    index: int = -1  # prompt index; -1: idle
    prompt: list[int] = field(default_factory=list)
    fed: int = 0  # prompt tokens already decoded
    start: float = 0.0
    out: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def _fill(model: Model, slots: list[Slot]) -> list[tuple[Slot, int]]:
    """One llama_decode: first every generating slot's last token, then prompt chunks (llama-server's
    order). Returns the (slot, batch index) pairs that produced logits."""
    items, outs = [], []
    for s in slots:
        if s.index >= 0 and s.fed == len(s.prompt):
            outs.append((s, len(items)))
            items.append((s.out[-1], len(s.prompt) + len(s.out) - 1, s.seq, True))
    for s in slots:
        if s.index < 0 or s.fed == len(s.prompt):
            continue
        take = min(len(s.prompt) - s.fed, N_BATCH - len(items))
        for k in range(s.fed, s.fed + take):
            last = k == len(s.prompt) - 1
            if last:
                outs.append((s, len(items)))
            items.append((s.prompt[k], k, s.seq, last))
        s.fed += take
    model.decode(items)
    return outs


def run_round(model: Model, prompts: list[list[int]], n_seq: int, max_tokens: int) -> dict:
    slots = [Slot(seq) for seq in range(n_seq)]
    pending, requests = deque(range(len(prompts))), []
    round_start = pc.now()
    while True:
        for s in slots:
            if s.index < 0 and pending:
                model.clear(s.seq)
                i = pending.popleft()
                s.index, s.prompt, s.fed, s.out, s.times, s.start = i, prompts[i], 0, [], [], pc.now()
        if all(s.index < 0 for s in slots):
            break
        outs = _fill(model, slots)
        for s, bi in outs:
            s.out.append(model.greedy(bi))
            s.times.append(pc.now() - s.start)
            if len(s.out) == max_tokens:
                requests.append(pc.request_record(s.index, len(s.prompt), s.start - round_start, s.times, s.out))
                s.index = -1
    return pc.round_record(pc.now() - round_start, requests)


def main(argv=None) -> int:
    args = parse_args(argv)
    import llama_cpp as L

    keep = quiet_logs(L)  # noqa: F841 - must outlive every llama.cpp call
    L.llama_backend_init()
    if args.quantize_to:
        pc.emit(quantize_q8(L, args.gguf, args.quantize_to, args.threads))
        return 0
    texts = pc.read_prompts(args.prompts)
    t0 = pc.now()
    model = Model(L, args.gguf)
    prompts = [model.tokenize(t) for t in texts]
    # KV room per sequence, rounded up to llama.cpp's 256-token padding
    model.open_context(args.threads, args.parallel, -(-(max(map(len, prompts)) + args.max_tokens + 1) // 256) * 256)
    load_s = pc.now() - t0
    for _ in range(args.warmup):
        run_round(model, prompts[: args.parallel], args.parallel, min(8, args.max_tokens))
    rounds = [run_round(model, prompts, args.parallel, args.max_tokens) for _ in range(args.rounds)]
    settings = dict(model.settings, desc=model.desc(), n_params=L.llama_model_n_params(model.model))
    pc.emit(pc.document("llama-cpp", args.mode, model=args.gguf, threads=args.threads, concurrency=args.parallel,
                        max_tokens=args.max_tokens, load_s=load_s, rounds=rounds,
                        weight_bytes=int(L.llama_model_size(model.model)), settings=settings,
                        versions={"llama_cpp_python": L.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
