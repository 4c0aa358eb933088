"""The packaged, pretrained MiniLM-L6 on small slices of the real datasets (../shared/data)."""

import pytest

from deploylm import settings
from deploylm.config import FinetuneConfig
from deploylm.evaluation import predict
from deploylm.train.finetune import finetune

pytestmark = pytest.mark.realmodel
DATA = settings.data_dir()


@pytest.fixture(autouse=True)
def _datasets_present():
    """Missing data fails these tests (a skip would let CI pass without them having run)."""
    if DATA is None or not (DATA / "sst2").is_dir() or not (DATA / "conll2003").is_dir():
        pytest.fail("datasets not found: set DEPLOYLM_DATA_DIR to the folder holding sst2/ and conll2003/ "
                    "(see ../shared/ASSETS.md)", pytrace=False)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    cfg = FinetuneConfig(model="minilm-l6", task="classification", data="sst2", max_train_samples=1200,
                         max_eval_samples=200, epochs=2, learning_rate=1e-4, batch_size=16, max_length=64)
    return finetune(cfg, tmp_path_factory.mktemp("real") / "sst2")


def test_minilm_learns_sentiment_from_a_small_slice(sentiment):
    art = sentiment
    # 200 balanced-ish dev sentences: chance is ~0.5; 150 steps of fine-tuning reach well above it
    # (fewer than ~100 steps leave this checkpoint at the majority class: its CLS pooler starts untrained)
    assert art.metrics["sst2:dev"]["accuracy"] >= 0.70
    preds = predict(art, ["an utterly delightful, moving film", "a boring, painful waste of two hours"])
    assert [p["label"] for p in preds] == ["positive", "negative"]


def test_minilm_ner_returns_spans_from_raw_text(tmp_path):
    cfg = FinetuneConfig(model="minilm-l6", task="token-classification", data="conll2003", max_train_samples=1200,
                         max_eval_samples=200, epochs=2, learning_rate=1e-4, batch_size=16, max_length=64)
    art = finetune(cfg, tmp_path / "ner")
    assert art.metrics["conll2003:dev"]["f1"] > 0.3
    text = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."
    ents = predict(art, [text])[0]["entities"]
    assert ents, "expected at least one entity"
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ents)


def test_int8_of_the_real_model_keeps_its_accuracy(sentiment, tmp_path):
    """Export + ORT dynamic int8 of a really fine-tuned MiniLM: parity against torch on real text, and the
    gate's dev-set delta within the default 1 point (speed is measured by the gate, not asserted here)."""
    from deploylm.optimize.gate import GateOptions
    from deploylm.optimize.quantize import quantize

    out = quantize(sentiment, tmp_path / "int8", "dynamic-int8",
                   gate=GateOptions(max_eval_samples=200, rounds=1, allow_slower=True))
    gate = out.manifest["gate"]
    assert gate["samples"] == 200 and abs(gate["metric_delta_points"]) <= 1.0
    parity = out.manifest["parity"]
    assert parity["passed"] and parity["real"]["argmax_agreement"] >= 0.95
    fp32 = predict(sentiment, ["an utterly delightful, moving film", "a boring, painful waste of two hours"])
    int8 = predict(out, ["an utterly delightful, moving film", "a boring, painful waste of two hours"])
    assert [p["label"] for p in int8] == [p["label"] for p in fp32]
