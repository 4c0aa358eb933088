"""Sampler over a batch of rows, each with its own parameters and seed: no model, logits built by hand."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from deploylm.generation.sampler import Sampler, SeqSampling
from deploylm.generation.types import SamplingParams

V = 64


def row_from_probs(probs: list[float], vocab: int = V) -> torch.Tensor:
    """Logits whose softmax puts `probs` on tokens 0.. and (almost) nothing elsewhere."""
    logits = torch.full((vocab,), -1e4)
    logits[: len(probs)] = torch.log(torch.tensor(probs))
    return logits


def draw_many(params: SamplingParams, row: torch.Tensor, n: int = 4000) -> Counter:
    """One draw from each of n independently seeded sequences sharing `row`."""
    states = [SeqSampling(SamplingParams(**{**params.__dict__, "seed": s}), [], row.shape[0]) for s in range(n)]
    out = Sampler().sample(row.repeat(n, 1), states)
    return Counter(s.token_id for s in out)


def test_all_greedy_batch_is_the_argmax_of_each_row():
    logits = torch.randn(3, V)
    best = [5, 17, 63]
    for r, t in enumerate(best):
        logits[r, t] = 50.0
    states = [SeqSampling(SamplingParams(temperature=0.0), [1, 2], V) for _ in best]
    assert all(s.plain_greedy for s in states)
    out = Sampler().sample(logits, states)
    assert [s.token_id for s in out] == best
    assert all(s.logprob is None and s.top == [] for s in out)


def run_seeded(row_seq: list[torch.Tensor], others: int) -> list[int]:
    """Tokens of one seeded sampled sequence over len(row_seq) steps, batched with `others` unrelated rows
    (random logits, other parameters, greedy and penalised among them)."""
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=40, min_p=0.01, seed=1234)
    mine = SeqSampling(params, [3, 4, 5], V)
    kinds = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.3, top_k=5),
             SamplingParams(temperature=0.7, repetition_penalty=1.3, presence_penalty=0.5),
             SamplingParams(temperature=1.0, min_p=0.2, logprobs=3)]
    rest = [SeqSampling(kinds[i % len(kinds)], [7], V) for i in range(others)]
    noise = torch.Generator().manual_seed(99)
    tokens = []
    for row in row_seq:
        logits = torch.randn(others + 1, V, generator=noise)
        where = others // 2  # the seeded row sits in the middle of the batch
        logits[where] = row
        states = rest[:where] + [mine] + rest[where:]
        out = Sampler().sample(logits, states)
        for s, o in zip(states, out):
            s.append(o.token_id)
        tokens.append(out[where].token_id)
    return tokens


def test_seeded_row_gets_the_same_tokens_alone_and_in_a_batch_of_five():
    rows = [torch.randn(V, generator=torch.Generator().manual_seed(i)) for i in range(30)]
    alone = run_seeded(rows, others=0)
    assert run_seeded(rows, others=4) == alone
    assert len(set(alone)) > 5  # it really sampled: not a constant argmax


def test_different_seeds_and_choice_indexes_draw_differently():
    row = torch.zeros(1, V)  # uniform: any two independent streams differ quickly

    def stream(seed, choice):
        s = SeqSampling(SamplingParams(seed=seed), [], V, choice_index=choice)
        return [Sampler().sample(row.clone(), [s])[0].token_id for _ in range(20)]

    assert stream(5, 0) == stream(5, 0)
    assert stream(5, 0) != stream(6, 0)
    assert stream(5, 0) != stream(5, 1)
    unseeded = SeqSampling(SamplingParams(), [], V), SeqSampling(SamplingParams(), [], V)
    draws = [[Sampler().sample(row.clone(), [s])[0].token_id for _ in range(20)] for s in unseeded]
    assert draws[0] != draws[1]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.full((1, V), -10.0)
    logits[0, 1], logits[0, 2] = 2.0, 1.5  # 1 is best, but it is in the prompt
    s = SeqSampling(SamplingParams(temperature=0.0, repetition_penalty=2.0), [1], V)
    assert not s.plain_greedy
    assert Sampler().sample(logits.clone(), [s])[0].token_id == 2  # 2.0 / 2 = 1.0 < 1.5
    neg = torch.full((1, V), -10.0)
    neg[0, 3], neg[0, 4] = -1.0, -1.5  # 3 is best but seen: -1.0 * 2 = -2.0 < -1.5
    s = SeqSampling(SamplingParams(temperature=0.0, repetition_penalty=2.0), [3], V)
    assert Sampler().sample(neg, [s])[0].token_id == 4


def test_frequency_and_presence_penalties_count_output_tokens_only():
    logits = torch.full((1, V), -10.0)
    logits[0, 1], logits[0, 2] = 1.0, 0.5
    freq = SeqSampling(SamplingParams(temperature=0.0, frequency_penalty=0.2), [2, 2, 2], V)  # prompt: no effect
    assert Sampler().sample(logits.clone(), [freq])[0].token_id == 1
    freq.append(1)
    assert Sampler().sample(logits.clone(), [freq])[0].token_id == 1  # 1.0 - 0.2 = 0.8 > 0.5
    freq.append(1)
    freq.append(1)
    assert Sampler().sample(logits.clone(), [freq])[0].token_id == 2  # 1.0 - 0.6 = 0.4 < 0.5
    pres = SeqSampling(SamplingParams(temperature=0.0, presence_penalty=0.6), [], V)
    pres.append(1)
    assert Sampler().sample(logits.clone(), [pres])[0].token_id == 2  # once, whatever the count


def test_temperature_reshapes_the_distribution():
    row = row_from_probs([0.5, 0.3, 0.2])
    counts = draw_many(SamplingParams(temperature=0.5), row)
    # T = 0.5 squares the probabilities: 0.25 : 0.09 : 0.04
    expected = [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]
    for t, p in enumerate(expected):
        assert abs(counts[t] / 4000 - p) < 0.03
    assert set(counts) <= {0, 1, 2}


def test_top_k_keeps_the_k_best_and_renormalises():
    counts = draw_many(SamplingParams(top_k=2), row_from_probs([0.5, 0.3, 0.2]))
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 4000 - 0.625) < 0.03


def test_top_p_keeps_the_smallest_head_reaching_p():
    counts = draw_many(SamplingParams(top_p=0.75), row_from_probs([0.5, 0.3, 0.15, 0.05]))
    assert set(counts) == {0, 1}


def test_min_p_drops_tokens_below_a_share_of_the_best():
    counts = draw_many(SamplingParams(min_p=0.5), row_from_probs([0.5, 0.3, 0.15, 0.05]))
    assert set(counts) == {0, 1}  # keep p >= 0.25


def test_logprobs_are_of_the_penalised_distribution_before_temperature():
    row = row_from_probs([0.5, 0.3, 0.2]).unsqueeze(0)
    for temperature in (0.0, 1.7):
        s = SeqSampling(SamplingParams(temperature=temperature, logprobs=2, seed=0), [], V)
        out = Sampler().sample(row.clone(), [s])[0]
        assert [t for t, _ in out.top] == [0, 1]
        assert out.top[0][1] == pytest.approx(math.log(0.5), abs=1e-4)
        assert out.top[1][1] == pytest.approx(math.log(0.3), abs=1e-4)
        assert out.logprob == pytest.approx(math.log([0.5, 0.3, 0.2][out.token_id]), abs=1e-4)
    # with a penalty, logprobs follow the penalised logits: token 0's logit log(0.5) < 0 doubles
    s = SeqSampling(SamplingParams(temperature=0.0, logprobs=0, repetition_penalty=2.0), [0], V)
    out = Sampler().sample(row.clone(), [s])[0]
    z = [0.25, 0.3, 0.2]  # exp(2 * log 0.5) = 0.25
    assert out.token_id == 1 and out.top == []
    assert out.logprob == pytest.approx(math.log(0.3 / sum(z)), abs=1e-3)


class OnlyEvenTokens:
    """A grammar stand-in: even ids allowed, records what it is told."""

    def __init__(self):
        self.accepted = []

    def mask_logits(self, row):
        row[1::2] = float("-inf")

    def accept(self, token_id):
        self.accepted.append(token_id)


def test_grammar_rows_are_masked_before_sampling_and_told_the_choice():
    grammars = [OnlyEvenTokens(), OnlyEvenTokens()]
    states = [SeqSampling(SamplingParams(temperature=0.0), [], V, grammar=grammars[0]),
              SeqSampling(SamplingParams(temperature=1.5, seed=3), [], V, grammar=grammars[1]),
              SeqSampling(SamplingParams(temperature=1.5, seed=3), [], V)]
    gen = torch.Generator().manual_seed(0)
    free = []
    for _ in range(40):
        logits = torch.randn(3, V, generator=gen)
        logits[:, 1] = 20.0  # an odd token the model loves
        out = Sampler().sample(logits, states)
        for s, o in zip(states, out):
            s.append(o.token_id)
        free.append(out[2].token_id)
    assert grammars[0].accepted and all(t % 2 == 0 for g in grammars for t in g.accepted)
    assert len(grammars[1].accepted) == 40
    assert free.count(1) > 30  # the row without grammar takes the favourite


def test_logits_that_do_not_match_the_states_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        Sampler().sample(torch.zeros(2, V), [SeqSampling(SamplingParams(), [], V)])
