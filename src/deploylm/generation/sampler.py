"""Picks the next token of every sequence in a decode step from the runner's float32 logits [B, V].

Order per row, as Hugging Face's processors apply them: grammar mask, repetition / presence / frequency
penalties, then (sampled rows only) temperature, top-k, top-p, min-p, and one draw. The [B, V] work is done
for all rows that need it at once; only the draw is per row, from the row's own torch.Generator, so a seeded
request gets the same tokens whatever else shares its batch.

Reported logprobs are log-softmax of the logits after the grammar mask and penalties, before temperature and
truncation (vLLM reports the raw model distribution by default): they describe what this request's rules
allowed, and stay comparable between a greedy and a sampled request, since temperature and top-p/top-k only
decide how to draw, not what the model thinks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from .types import SamplingParams

_NEG_INF = float("-inf")


@dataclass
class Sampled:
    token_id: int
    logprob: Optional[float] = None  # None unless the request asked for logprobs
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first


class SeqSampling:
    """Sampling state of one choice of one request, updated by `append` after each chosen token."""

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int, choice_index: int = 0,
                 grammar: Any = None):
        self.params = params
        self.vocab_size = vocab_size
        self.grammar = grammar  # structured.GrammarState or None
        seed = params.seed + choice_index if params.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed % 2**64)
        self.penalised = (params.repetition_penalty != 1.0 or params.presence_penalty != 0.0
                          or params.frequency_penalty != 0.0)
        self.output_counts: Optional[torch.Tensor] = None  # float32 [V]: occurrences in the output
        self.seen: Optional[torch.Tensor] = None  # bool [V]: in prompt or output
        if self.penalised:  # kept only when used: [V] per sequence adds up at a 262k vocabulary
            self.output_counts = torch.zeros(vocab_size, dtype=torch.float32)
            self.seen = torch.zeros(vocab_size, dtype=torch.bool)
            if len(prompt_ids):
                self.seen[torch.as_tensor(list(prompt_ids), dtype=torch.long)] = True
        # The fast path of Sampler: nothing to do but argmax.
        self.plain_greedy = params.greedy and not self.penalised and grammar is None and params.logprobs is None

    def append(self, token_id: int) -> None:
        if self.penalised:
            self.output_counts[token_id] += 1.0
            self.seen[token_id] = True
        if self.grammar is not None:
            self.grammar.accept(token_id)


class Sampler:
    """Stateless: every per-request piece lives in SeqSampling, so one Sampler serves the whole engine."""

    def sample(self, logits: torch.Tensor, states: list[SeqSampling]) -> list[Sampled]:
        """One token per row of `logits` [B, V] (float32; changed in place). The caller then calls
        `states[i].append(token)` once it keeps the token."""
        if logits.dim() != 2 or logits.shape[0] != len(states):
            raise ValueError(f"logits {tuple(logits.shape)} do not match {len(states)} sequences")
        if all(s.plain_greedy for s in states):
            return [Sampled(t) for t in logits.argmax(dim=-1).tolist()]
        for row, s in zip(logits, states):
            if s.grammar is not None:
                s.grammar.mask_logits(row)
        _apply_penalties(logits, states)
        tokens: list[int] = [0] * len(states)
        greedy = [i for i, s in enumerate(states) if s.params.greedy]
        drawn = [i for i, s in enumerate(states) if not s.params.greedy]
        if greedy:
            for i, t in zip(greedy, logits[greedy].argmax(dim=-1).tolist()):
                tokens[i] = t
        logprobs = _logprobs(logits, states)  # before the sampled rows' logits are warped below
        if drawn:
            for i, t in zip(drawn, _draw(logits[drawn], [states[i] for i in drawn])):
                tokens[i] = t
        return [_sampled(tokens[i], logprobs.get(i), states[i]) for i in range(len(states))]


def _apply_penalties(logits: torch.Tensor, states: list[SeqSampling]) -> None:
    rows = [i for i, s in enumerate(states) if s.penalised]
    if not rows:
        return
    part = logits[rows]
    dev = part.device
    rep = torch.tensor([[states[i].params.repetition_penalty] for i in rows], device=dev)
    pres = torch.tensor([[states[i].params.presence_penalty] for i in rows], device=dev)
    freq = torch.tensor([[states[i].params.frequency_penalty] for i in rows], device=dev)
    seen = torch.stack([states[i].seen for i in rows]).to(dev)
    counts = torch.stack([states[i].output_counts for i in rows]).to(dev)
    # Repetition (HF/vLLM): a seen token's logit moves towards "less likely" whatever its sign.
    part = torch.where(seen, torch.where(part > 0, part / rep, part * rep), part)
    part -= freq * counts + pres * (counts > 0).to(part.dtype)
    logits[rows] = part


def _logprobs(logits: torch.Tensor, states: list[SeqSampling]) -> dict[int, torch.Tensor]:
    rows = [i for i, s in enumerate(states) if s.params.logprobs is not None]
    if not rows:
        return {}
    lp = torch.log_softmax(logits[rows], dim=-1)
    return {i: lp[j] for j, i in enumerate(rows)}


def _sampled(token: int, lp: Optional[torch.Tensor], state: SeqSampling) -> Sampled:
    if lp is None:
        return Sampled(token)
    k = min(state.params.logprobs, lp.shape[0])
    top: list[tuple[int, float]] = []
    if k > 0:
        values, ids = lp.topk(k)
        top = list(zip(ids.tolist(), values.tolist()))
    return Sampled(token, float(lp[token]), top)


def _draw(x: torch.Tensor, states: list[SeqSampling]) -> list[int]:
    """x: [R, V] logits of the sampled rows (a copy: warped in place). One uniform per row from its own
    generator, inverted through the row's CDF."""
    dev = x.device
    x /= torch.tensor([[s.params.temperature] for s in states], device=dev)
    _top_k(x, [s.params.top_k for s in states])
    _top_p(x, [s.params.top_p for s in states])
    _min_p(x, [s.params.min_p for s in states])
    cdf = torch.softmax(x, dim=-1).cumsum_(dim=-1)
    u = torch.cat([torch.rand(1, generator=s.generator) for s in states]).to(dev)
    # right=True: the first index whose CDF exceeds u, so a zero-probability (masked) token is never chosen.
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    return idx.clamp_(max=x.shape[1] - 1).tolist()


def _top_k(x: torch.Tensor, ks: list[int]) -> None:
    vocab = x.shape[1]
    rows = [i for i, k in enumerate(ks) if 0 < k < vocab]
    if not rows:
        return
    k = torch.tensor([ks[i] for i in rows], device=x.device)
    part = x[rows]
    kth = part.topk(int(k.max()), dim=-1).values.gather(1, (k - 1).unsqueeze(1))
    x[rows] = part.masked_fill_(part < kth, _NEG_INF)  # ties with the k-th all stay


def _top_p(x: torch.Tensor, ps: list[float]) -> None:
    rows = [i for i, p in enumerate(ps) if p < 1.0]
    if not rows:
        return
    p = torch.tensor([[ps[i]] for i in rows], device=x.device)
    part = x[rows]
    sorted_logits, order = part.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Keep the smallest head whose mass reaches p: drop a token once the mass before it already does.
    # The best token has nothing before it, so it always stays.
    drop = (probs.cumsum(dim=-1) - probs) >= p
    x[rows] = part.scatter_(1, order, sorted_logits.masked_fill_(drop, _NEG_INF))


def _min_p(x: torch.Tensor, min_ps: list[float]) -> None:
    rows = [i for i, m in enumerate(min_ps) if m > 0.0]
    if not rows:
        return
    m = torch.tensor([[min_ps[i]] for i in rows], device=x.device)
    part = x[rows]
    probs = part.softmax(dim=-1)
    x[rows] = part.masked_fill_(probs < m * probs.max(dim=-1, keepdim=True).values, _NEG_INF)
