"""The distillation loss against hand-computed values."""

import math

import pytest
import torch

from deploylm.compress.kd import kd_loss, split_teacher_inputs


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(xs: list[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_soft_term_is_t_squared_kl_of_the_tempered_distributions():
    s, t = [1.0, -0.5, 0.25], [0.2, 0.9, -1.0]
    want = 4.0 * _kl(_softmax(t, 2.0), _softmax(s, 2.0))
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), None, temperature=2.0, alpha=1.0)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_alpha_mixes_in_cross_entropy_on_the_hard_labels():
    s, t = [1.0, -0.5], [0.0, 2.0]
    soft = _kl(_softmax(t, 1.0), _softmax(s, 1.0))
    hard = -math.log(_softmax(s, 1.0)[1])
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([1]), temperature=1.0, alpha=0.25)
    assert got.item() == pytest.approx(0.25 * soft + 0.75 * hard, rel=1e-5)


def test_positions_labelled_minus_100_count_in_neither_term():
    s = torch.tensor([[[1.0, 0.0], [5.0, -5.0]]])  # [batch, tokens, classes]; the second token is padding
    t = torch.tensor([[[0.0, 1.0], [-5.0, 5.0]]])
    masked = kd_loss(s, t, torch.tensor([[0, -100]]), temperature=1.0, alpha=0.5)
    alone = kd_loss(s[:, :1], t[:, :1], torch.tensor([[0]]), temperature=1.0, alpha=0.5)
    assert masked.item() == pytest.approx(alone.item(), rel=1e-6)


def test_a_student_equal_to_its_teacher_has_no_soft_loss():
    x = torch.tensor([[0.3, -1.2, 2.0]])
    assert kd_loss(x, x.clone(), None, temperature=3.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_the_teacher_reads_its_own_inputs_when_the_batch_has_them():
    batch = {"input_ids": 1, "attention_mask": 2, "labels": 3, "teacher_input_ids": 4, "teacher_attention_mask": 5}
    student, teacher = split_teacher_inputs(batch)
    assert student == {"input_ids": 1, "attention_mask": 2, "labels": 3}
    assert teacher == {"input_ids": 4, "attention_mask": 5}
    assert split_teacher_inputs({"input_ids": 1, "labels": 3})[1] == {"input_ids": 1}
