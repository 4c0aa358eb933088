"""The continuous-batching scheduler alone, driven step by step against a fake runner (no model, no engine), the
way vLLM tests its scheduler. Expected tokens come from `reference` (the fake model run alone), expected sizes are
worked out by hand in each test."""

from __future__ import annotations

import pytest
from fake_decoder_runner import FakeRunner, reference

from deploylm.errors import ConfigError, RequestError
from deploylm.generation.scheduler import FINISHED, RUNNING, WAITING, Scheduler, SchedulerConfig
from deploylm.generation.types import KVCopy


def make(**kw) -> tuple[Scheduler, FakeRunner]:
    kw.setdefault("prefix_caching", False)
    cfg = SchedulerConfig(**kw)
    return Scheduler(cfg), FakeRunner(kv_budget=cfg.total_blocks * cfg.block_size)


def prompt(n: int, start: int = 10) -> list[int]:
    return [4 + (start + 7 * i) % 290 for i in range(n)]


def step(sched: Scheduler, runner: FakeRunner):
    """What the engine does in one step, with greedy sampling and max_tokens as the only stop."""
    plan = sched.schedule()
    logits = runner.step(plan.batch)
    sched.advance(plan)
    for seq, row in zip(plan.sampling(), logits):
        sched.append(seq, int(row.argmax()))
        if len(seq.output_ids) >= seq.max_tokens:
            sched.finish(seq)
    bs = sched.config.block_size
    for seq in sched.running:  # the runner holds exactly what the scheduler believes it does
        assert runner.kv[seq.seq_id] == seq.all_ids()[:seq.num_computed]
        assert runner.capacity[seq.seq_id] == seq.blocks * bs
    for entry in sched.cache.entries.values():
        assert runner.capacity[entry.entry_id] == entry.blocks * bs
    return plan


def run_all(sched: Scheduler, runner: FakeRunner, limit: int = 300) -> list:
    plans = []
    while sched.has_work:
        plans.append(step(sched, runner))
        assert len(plans) < limit, "the scheduler made no progress"
    assert runner.violations == [] and runner.unknown_frees == []
    return plans


def ids(plan) -> list[int]:
    return [c.seq_id for c in plan.batch.chunks]


def test_config_refuses_a_budget_below_one_token_per_sequence():
    with pytest.raises(ConfigError, match="max_step_tokens"):
        SchedulerConfig(max_num_seqs=8, max_step_tokens=4)
    with pytest.raises(ConfigError, match="smaller than one block"):
        SchedulerConfig(kv_tokens=8, block_size=16)


def test_admission_is_fifo_and_bounded_by_max_num_seqs():
    sched, runner = make(max_num_seqs=2, max_step_tokens=64, kv_tokens=1024, block_size=4)
    a, b, c = (sched.add(r, prompt(5, start=i * 40), 3)[0] for i, r in enumerate("abc"))
    first = step(sched, runner)
    assert ids(first) == [a.seq_id, b.seq_id]
    assert list(sched.waiting) == [c] and c.status == WAITING
    plans = [first] + run_all(sched, runner)
    assert all(len(p.batch.chunks) <= 2 for p in plans)
    # a and b sample at steps 1, 2, 3 and finish; c enters at step 4 with its whole prompt.
    assert [ids(p) for p in plans[1:3]] == [[a.seq_id, b.seq_id]] * 2
    assert plans[3].batch.chunks[0].seq_id == c.seq_id and plans[3].batch.chunks[0].token_ids == c.prompt_ids
    for s in (a, b, c):
        assert s.output_ids == reference(s.prompt_ids, 3) and s.status == FINISHED


def test_a_head_that_does_not_fit_blocks_the_queue():
    # 8 blocks of 4. a takes 5 (then 6), b needs 4 and waits; c (1 block) would fit but must not jump the queue.
    sched, runner = make(kv_tokens=32, block_size=4, max_step_tokens=64, max_num_seqs=8)
    a = sched.add("a", prompt(20), 4)[0]
    b = sched.add("b", prompt(16, start=50), 4)[0]
    c = sched.add("c", prompt(4, start=90), 4)[0]
    plans = [step(sched, runner)]
    while a.status != FINISHED:
        plans.append(step(sched, runner))
        assert list(sched.waiting) == [b, c]
    plans += run_all(sched, runner)
    admitted = [c_.seq_id for p in plans for c_ in p.batch.chunks if c_.start_pos == 0]
    assert admitted == [a.seq_id, b.seq_id, c.seq_id]
    for s in (a, b, c):
        assert s.output_ids == reference(s.prompt_ids, 4)


def test_long_prompt_is_prefilled_in_chunks_and_samples_only_on_the_last():
    sched, runner = make(max_step_tokens=8, max_num_seqs=4, kv_tokens=1024, block_size=4)
    seq = sched.add("long", prompt(20), 3)[0]
    plans = run_all(sched, runner)
    got = [(c.start_pos, len(c.token_ids), c.sample) for p in plans for c in p.batch.chunks]
    assert got == [(0, 8, False), (8, 8, False), (16, 4, True), (20, 1, True), (21, 1, True)]
    assert [c.token_ids for c in plans[0].batch.chunks + plans[1].batch.chunks] == [prompt(20)[:8], prompt(20)[8:16]]
    assert seq.output_ids == reference(prompt(20), 3)


def test_prefill_chunks_share_the_step_budget_with_decodes():
    sched, runner = make(max_step_tokens=8, max_num_seqs=4, kv_tokens=1024, block_size=4)
    short = sched.add("s", prompt(3), 6)[0]
    long = sched.add("l", prompt(20, start=60), 2)[0]
    plans = run_all(sched, runner)
    assert all(p.batch.num_tokens <= 8 for p in plans)
    sizes = [{c.seq_id: len(c.token_ids) for c in p.batch.chunks} for p in plans[:4]]
    # step 1: s's prompt (3) + 5 of l's; then s decodes 1 and l prefills 7, twice; l's last 1 token samples.
    assert sizes == [{short.seq_id: 3, long.seq_id: 5}, {short.seq_id: 1, long.seq_id: 7},
                     {short.seq_id: 1, long.seq_id: 7}, {short.seq_id: 1, long.seq_id: 1}]
    assert short.output_ids == reference(prompt(3), 6)
    assert long.output_ids == reference(prompt(20, start=60), 2)


def test_kv_grows_in_blocks_only_when_a_chunk_needs_it():
    # Blocks of 4, growth by >= 2 blocks, capped at prompt + max_tokens (25 tokens -> 7 blocks): 5 prompt tokens
    # reserve 2 blocks; the 9th token needs a 3rd -> 4 blocks; the 17th a 5th -> 6 blocks. The 20th output is
    # sampled but never computed, so 24 tokens are the most ever held.
    sched, runner = make(block_size=4, growth_blocks=2, kv_tokens=1024, max_step_tokens=64, max_num_seqs=4)
    seq = sched.add("g", prompt(5), 20)[0]
    plans = run_all(sched, runner)
    grown = [(p.batch.reserve[seq.seq_id], p.batch.chunks[0].start_pos) for p in plans if seq.seq_id in p.batch.reserve]
    assert grown == [(8, 0), (16, 8), (24, 16)]
    assert seq.output_ids == reference(prompt(5), 20)


def test_request_that_can_never_fit_is_refused_with_the_numbers():
    sched, _ = make(kv_tokens=64, block_size=16)
    with pytest.raises(RequestError) as err:
        sched.add("big", prompt(50), 20)
    assert err.value.status == 400
    assert all(s in str(err.value) for s in ("50 tokens", "max_tokens (20)", "80 tokens", "64 tokens"))
    assert not sched.waiting
    assert sched.add("fits", prompt(40), 24)  # 64 tokens: exactly the budget


def test_full_queue_answers_429():
    sched, runner = make(max_waiting=2, kv_tokens=1024, block_size=4, max_num_seqs=4, max_step_tokens=64)
    sched.add("a", prompt(4), 2)
    sched.add("b", prompt(4), 2)
    with pytest.raises(RequestError) as err:
        sched.add("c", prompt(4), 2)
    assert err.value.status == 429 and "--max-waiting 2" in str(err.value)
    step(sched, runner)  # a and b leave the queue for the running set
    with pytest.raises(RequestError) as err:
        sched.make_seqs("d", prompt(4), 2, n=2, in_flight=1)  # 2 + 1 on its way > 2
    assert err.value.status == 429
    assert len(sched.add("d", prompt(4), 2, n=2)) == 2


def test_preemption_takes_the_newest_and_recomputes_it():
    # 6 blocks of 4; three 8-token prompts take 2 blocks each, so the first growth finds none free.
    sched, runner = make(kv_tokens=24, block_size=4, growth_blocks=1, max_step_tokens=64, max_num_seqs=8)
    seqs = [sched.add(r, prompt(8, start=40 * i), 8)[0] for i, r in enumerate("abc")]
    outputs_when_preempted: dict[int, list[int]] = {}
    plans = []
    while sched.has_work:
        running_before = list(sched.running)
        plan = step(sched, runner)
        plans.append(plan)
        if plan.preempted:
            victim = plan.preempted[0]
            assert victim is running_before[-1]  # the most recently admitted
            assert sched.waiting[0] is plan.preempted[-1] and victim.status == WAITING
            assert victim.seq_id in plan.batch.free and victim.seq_id not in ids(plan)
            assert victim.seq_id not in runner.capacity
            outputs_when_preempted[victim.seq_id] = list(victim.output_ids)
        for c in plan.batch.chunks:
            if c.start_pos == 0 and c.seq_id in outputs_when_preempted:  # recomputed: prompt + what it had made
                s = next(s for s in seqs if s.seq_id == c.seq_id)
                assert c.token_ids == s.prompt_ids + outputs_when_preempted.pop(c.seq_id)
        assert len(plans) < 300
    assert runner.violations == [] and runner.unknown_frees == []
    assert plans[1].preempted == [seqs[2]]  # step 2: a needs a 3rd block, c (newest) gives way
    assert sched.preemptions >= 2 and seqs[2].preemptions >= 1
    unconstrained, free_runner = make(kv_tokens=4096, block_size=4, max_step_tokens=64, max_num_seqs=8)
    alone = [unconstrained.add(s.request_id, s.prompt_ids, 8)[0] for s in seqs]
    run_all(unconstrained, free_runner)
    assert unconstrained.preemptions == 0
    for s, u in zip(seqs, alone):
        assert s.output_ids == u.output_ids == reference(s.prompt_ids, 8)


def test_prefix_cache_hit_copies_the_shared_blocks():
    sched, runner = make(prefix_caching=True, block_size=4, kv_tokens=1024, max_step_tokens=64, max_num_seqs=8)
    shared = prompt(8, start=5)
    first = sched.add("p1", shared + [200, 201, 202], 4)[0]
    plan1 = step(sched, runner)
    assert len(plan1.batch.snapshots) == 1
    snap = plan1.batch.snapshots[0]
    assert (snap.src, snap.n_tokens) == (first.seq_id, 8) and plan1.batch.reserve[snap.dst] == 8
    second = sched.add("p2", shared + [210, 211], 4)[0]
    plan2 = step(sched, runner)
    assert plan2.batch.copies == [KVCopy(snap.dst, second.seq_id, 8)]
    chunk = plan2.batch.chunks[ids(plan2).index(second.seq_id)]
    assert (chunk.start_pos, chunk.token_ids) == (8, [210, 211])
    assert second.cached_tokens == 8 and first.cached_tokens == 0
    assert sched.stats()["prefix_cache_hit_rate"] == pytest.approx(8 / (11 + 10))
    run_all(sched, runner)
    assert first.output_ids == reference(first.prompt_ids, 4)
    assert second.output_ids == reference(second.prompt_ids, 4)  # the copied KV was the right one


def test_prefix_cache_leaves_the_last_prompt_token_to_compute_and_waits_for_the_snapshot():
    sched, runner = make(prefix_caching=True, block_size=4, kv_tokens=1024, max_step_tokens=64, max_num_seqs=8)
    p = prompt(12, start=33)  # exactly 3 blocks
    a = sched.add("a", p, 3)[0]
    same_step = sched.add("b", p, 3)[0]  # its entry is written only at the end of this step: no hit
    step(sched, runner)
    assert same_step.cached_tokens == 0
    later = sched.add("c", p, 3)[0]
    plan = step(sched, runner)
    chunk = plan.batch.chunks[ids(plan).index(later.seq_id)]
    assert later.cached_tokens == 8 and (chunk.start_pos, len(chunk.token_ids)) == (8, 4) and chunk.sample
    run_all(sched, runner)
    for s in (a, same_step, later):
        assert s.output_ids == reference(p, 3)


def test_cache_entries_are_evicted_and_freed_before_anyone_is_preempted():
    # 6 blocks of 4. a (8 tokens, 1 output) leaves entry E_a (2 blocks); b (8 tokens) leaves E_b and fills the
    # budget; b's growth to 3 blocks must evict E_a (the least recently used), and free its KV in the runner,
    # rather than preempt b; b's 4th block then fits beside E_b.
    sched, runner = make(prefix_caching=True, kv_tokens=24, block_size=4, growth_blocks=1, max_step_tokens=64,
                         max_num_seqs=8)
    a = sched.add("a", prompt(8, start=1), 1)[0]
    step(sched, runner)
    (e_a,) = sched.cache.entries
    b = sched.add("b", prompt(8, start=100), 8)[0]
    step(sched, runner)
    e_b = next(e for e in sched.cache.entries if e != e_a)
    assert sched.free_blocks() == 0
    plans = run_all(sched, runner)
    assert sched.preemptions == 0 and b.preemptions == 0
    assert e_a in plans[0].batch.free and e_a not in runner.capacity
    assert list(sched.cache.entries) == [e_b] and runner.kv_tokens_allocated() == 8
    assert runner.kv[e_b] == b.prompt_ids
    assert a.output_ids == reference(a.prompt_ids, 1) and b.output_ids == reference(b.prompt_ids, 8)


def test_finish_frees_running_and_waiting_sequences_once():
    sched, runner = make(kv_tokens=64, block_size=4, max_num_seqs=2, max_step_tokens=64, growth_blocks=1)
    a, b, c = (sched.add(r, prompt(6, start=30 * i), 20)[0] for i, r in enumerate("abc"))
    step(sched, runner)
    assert a.status == b.status == RUNNING and c.status == WAITING
    used = sched.stats()["kv_used_tokens"]
    sched.finish(a)
    assert a not in sched.running and a.blocks == 0 and sched.stats()["kv_used_tokens"] == used - 8
    sched.finish(c)  # waiting: never had KV
    assert c not in sched.waiting
    plan = step(sched, runner)
    assert plan.batch.free == [a.seq_id] and a.seq_id not in runner.capacity
    assert c.seq_id not in ids(plan) and ids(plan) == [b.seq_id]
    sched.finish(a)  # twice: nothing more to free
    sched.finish(b)
    plan = step(sched, runner)
    assert plan.batch.free == [b.seq_id] and not plan.batch.chunks
    assert not sched.has_work and runner.kv_tokens_allocated() == 0
    assert runner.violations == [] and runner.unknown_frees == []
    assert all(not any(ch.seq_id == c.seq_id for ch in bt.chunks) for bt in runner.batches)


def test_finishing_a_preempted_sequence_frees_nothing_twice():
    sched, runner = make(kv_tokens=24, block_size=4, growth_blocks=1, max_step_tokens=64, max_num_seqs=8)
    seqs = [sched.add(r, prompt(8, start=40 * i), 8)[0] for i, r in enumerate("abc")]
    step(sched, runner)
    plan = step(sched, runner)
    (victim,) = plan.preempted
    assert victim is seqs[2] and victim in sched.waiting
    sched.finish(victim)
    assert victim not in sched.waiting and victim.status == FINISHED
    nxt = step(sched, runner)
    assert victim.seq_id not in nxt.batch.free
    run_all(sched, runner)
    assert runner.kv_tokens_allocated() == 0
