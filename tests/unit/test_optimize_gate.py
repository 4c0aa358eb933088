"""The gate's verdict and the parity checker, on hand-made records and runners (no model needed)."""

import numpy as np
import pytest

from deploylm.errors import ConfigError, GateError, ParityError
from deploylm.optimize.gate import GateOptions, judge, measure_speed
from deploylm.optimize.verify import compare, random_batches, tolerance_for


def record(delta: float, ratio: float, spread: float = 0.02) -> dict:
    from deploylm.optimize.speed_verdict import summarise

    ratios = [ratio - spread, ratio, ratio + spread, ratio - spread / 2, ratio + spread / 2]
    return {"metric": "accuracy", "metric_delta_points": delta, "parent": {"accuracy": 0.90},
            "variant": {"accuracy": 0.90 + delta / 100}, "samples": 872, "split": "dev", "speed_ratio": ratio,
            "speed": {"variant_seq_per_s": 100 * ratio, "parent_seq_per_s": 100, "batch_size": 32,
                      **summarise(ratios)}}


def test_metric_drop_beyond_limit_is_refused_with_numbers():
    with pytest.raises(GateError, match=r"dropped 1\.50 points.*--max-metric-drop 1"):
        judge(record(-1.5, 2.0), GateOptions(), "v")


def test_slower_is_refused_and_both_reasons_are_given():
    with pytest.raises(GateError, match=r"dropped 3\.00 points.*slower than its parent in every one of 5 rounds"):
        judge(record(-3.0, 0.8), GateOptions(), "v")


def test_slower_only_within_noise_is_not_refused():
    # Median 0.95, but one round of five had the variant ahead: within this host's noise, kept.
    judge(record(0.0, 0.95, spread=0.1), GateOptions(), "v")
    with pytest.raises(GateError, match=r"0\.93\.\.0\.97x"):
        judge(record(0.0, 0.95, spread=0.02), GateOptions(), "v")  # every round slower: refused


def test_the_verdict_records_rounds_interval_and_confidence():
    from deploylm.optimize.speed_verdict import summarise

    v = summarise([1.2, 0.9, 1.1, 1.0, 1.05])
    assert v["rounds"] == 5 and v["interval"] == [0.9, 1.2] and v["ratio_median"] == 1.05
    assert v["interval_confidence"] == 0.9375 and v["slower"] is False
    assert summarise([0.99, 0.8, 0.95])["slower"] is True


def test_allow_flags_and_limits():
    judge(record(-0.9, 1.2), GateOptions(), "v")  # within the default 1.0 point
    judge(record(-3.0, 1.2), GateOptions(allow_metric_drop=True), "v")
    judge(record(0.0, 0.5), GateOptions(allow_slower=True), "v")
    judge(record(-2.0, 1.1), GateOptions(max_metric_drop=2.5), "v")
    with pytest.raises(ConfigError):
        GateOptions(max_metric_drop=-1)


class Scaled:
    """A stand-in runner: logits = sum of embedded ids through a fixed random matrix, times `scale`."""

    def __init__(self, scale=1.0, noise=0.0, delay_loops=0):
        self.input_names = ("input_ids", "attention_mask")
        self.backend = "fake"
        self.w = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
        self.scale, self.noise, self.loops = scale, noise, delay_loops

    def run(self, batch):
        x = (batch["input_ids"] % 64)
        feats = np.stack([np.bincount(r[m.astype(bool)], minlength=64) for r, m in zip(x, batch["attention_mask"])])
        for _ in range(self.loops):
            np.linalg.svd(np.ones((40, 40)))
        out = feats.astype(np.float32) @ self.w * self.scale
        return {"logits": out + self.noise * np.random.default_rng(7).normal(size=out.shape).astype(np.float32)}


def test_random_batches_are_fresh_padded_and_never_zero():
    b = random_batches(30522, ("input_ids", "attention_mask"), seed=0, cls_id=101, sep_id=102)
    assert len(b) == 3
    for batch in b:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert (ids[:, 0] == 101).all() and (mask == 0).any()  # padded: masking is exercised
        assert (ids[mask.astype(bool)] != 0).all()
    assert not np.array_equal(random_batches(30522, ("input_ids",), seed=1)[0]["input_ids"][:2, :4],
                              b[0]["input_ids"][:2, :4])


def test_compare_measures_difference_and_agreement():
    batches = random_batches(5000, ("input_ids", "attention_mask"), seed=0, lowest_id=10)
    same = compare(Scaled(), Scaled(), batches)
    assert same["max_abs_diff"] == 0 and same["argmax_agreement"] == 1.0
    flipped = compare(Scaled(), Scaled(scale=-1.0), batches)
    assert flipped["argmax_agreement"] < 0.5 and flipped["max_abs_diff"] > 1


def test_tolerances_are_per_method_and_looser_only_explicitly():
    assert tolerance_for("onnx").max_abs < tolerance_for("dynamic-int8").max_abs
    assert tolerance_for("onnx", 0.5).max_abs == 0.5
    with pytest.raises(ConfigError):
        tolerance_for("int2")


def test_check_parity_raises_with_measured_difference():
    from transformers import AutoTokenizer

    from conftest import minilm_dir
    from deploylm.optimize.verify import check_parity

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    with pytest.raises(ParityError, match=r"max abs logit difference \d+(\.\d+)?.*allowed 0\.001"):
        check_parity(Scaled(), Scaled(noise=0.05), tok, "onnx", 64, 30522)
    ok = check_parity(Scaled(), Scaled(noise=1e-5), tok, "onnx", 64, 30522)
    assert ok["passed"] and 0 < ok["random"]["max_abs_diff"] < 1e-3


def test_measure_speed_ranks_a_slower_runner_lower():
    batches = random_batches(5000, ("input_ids", "attention_mask"), seed=0, lowest_id=10)
    speed = measure_speed({"fast": Scaled(), "slow": Scaled(delay_loops=200)}, batches, rounds=2)
    assert speed["slow"] < speed["fast"]


def test_agreement_counts_only_positions_the_parent_decides_clearly():
    class Fixed:
        input_names = ("input_ids", "attention_mask")

        def __init__(self, logits):
            self.logits = np.array(logits, dtype=np.float32)

        def run(self, feeds):
            return {"logits": self.logits}

    batch = [{"input_ids": np.zeros((3, 2), np.int64), "attention_mask": np.ones((3, 2), np.int64)}]
    parent = Fixed([[0.0, 0.1], [0.0, 3.0], [2.0, 0.0]])  # row 0: a 0.1 gap, near the boundary
    near_flip = Fixed([[0.1, 0.0], [0.0, 3.0], [2.0, 0.0]])
    res = compare(parent, near_flip, batch, margin=1.0)
    assert res["argmax_agreement"] == 1.0 and res["decided_positions"] == 2 and res["positions"] == 3
    assert compare(parent, near_flip, batch)["argmax_agreement"] == pytest.approx(2 / 3)  # no margin: counted
    clear_flip = Fixed([[0.0, 0.1], [3.0, 0.0], [2.0, 0.0]])
    assert compare(parent, clear_flip, batch, margin=1.0)["argmax_agreement"] == 0.5
