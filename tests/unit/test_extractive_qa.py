"""Extractive QA: SQuAD data and its article split, windows over long contexts, folding windows back into
answers with character offsets, the SQuAD metric, and the CLI from fine-tune to predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_artifact, minilm_dir
from squad_data import write_squad
from deploylm.data import Examples, load_dataset
from deploylm.errors import DataError, RequestError
from deploylm.tasks import get_task
from deploylm.tasks.extractive_qa import MAX_ANSWER_TOKENS
from deploylm.tasks.qa_metric import normalize_answer, squad_scores

@pytest.fixture
def squad_dir(tmp_path) -> Path:
    return write_squad(tmp_path / "squadmini")


@pytest.fixture(scope="module")
def qa_task():
    return get_task("extractive-qa")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


# --- the metric ---------------------------------------------------------------------------------------
def test_normalisation_follows_the_official_rules():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a word


def test_squad_scores_by_hand():
    # "the cat sat" vs "cat sat down": 2 common tokens, precision 2/2, recall 2/3 -> F1 0.8; best of the refs.
    scores = squad_scores(["the cat sat", "Paris"], [["cat sat down", "dog"], ["paris.", "Rome"]])
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((0.8 + 1.0) / 2)
    assert squad_scores(["x"], [["y"]]) == {"exact_match": 0.0, "f1": 0.0}


# --- data -------------------------------------------------------------------------------------------
def test_a_dev_only_directory_is_split_by_article_and_the_split_recorded(squad_dir):
    ds = load_dataset(str(squad_dir))
    assert ds.task == "extractive-qa"
    info = ds.info["data_split"]
    assert info["by"] == "article" and info["file"] == "dev-v1.1.json"
    parts = {s: set(info[f"{s}_articles"]) for s in ("train", "dev", "test")}
    assert [len(parts[s]) for s in ("train", "dev", "test")] == [24, 4, 2]
    assert not (parts["train"] & parts["dev"]) and not (parts["train"] & parts["test"])
    # Questions follow their article: every train question's context is from a train article.
    titles = {f"Article {t[1:]}." for t in parts["train"]}
    assert {x["context"].split(" The")[0] for x in ds.split("train").inputs} == titles
    assert len(ds.split("train")) == 48
    # Seeded: the same split on every load.
    assert load_dataset(str(squad_dir)).info == ds.info


@pytest.mark.parametrize("breakage, message", [
    (lambda arts: arts[3]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=500), "past the end"),
    (lambda arts: arts[3]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=0), "not the answer"),
    (lambda arts: arts[3]["paragraphs"][0].update(context=""), "context is missing or empty"),
    (lambda arts: arts[3]["paragraphs"][0]["qas"][1].update(question=" "), "question is missing or empty"),
])
def test_bad_training_data_is_refused_naming_where(tmp_path, breakage, message):
    root = write_squad(tmp_path / "bad", broken=breakage)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(str(root))
    assert "article 3" in str(err.value)


# --- windows ----------------------------------------------------------------------------------------
LONG = " ".join(f"filler{i}" for i in range(150)) + " The capital of France is Paris. " + \
       " ".join(f"tail{i}" for i in range(40))


def test_a_long_context_becomes_overlapping_windows_that_label_the_answer(qa_task, tokenizer):
    q = {"question": "What is the capital of France?", "context": LONG}
    feats, windows = qa_task.encode([q, {"question": "Who?", "context": "Bob did."}], tokenizer, 64)
    assert len(feats) > 3 and all(len(f["input_ids"]) <= 64 for f in feats)
    assert [w.example for w in windows] == [0] * (len(feats) - 1) + [1]
    start = LONG.index("Paris")
    ex = Examples([q], [{"text": ["Paris"], "answer_start": [start]}])
    labelled = qa_task.train_features(ex, tokenizer, {}, 64)
    hits = [(f["start_positions"], f["end_positions"], w) for f, w in zip(labelled, windows) if f["start_positions"]]
    assert hits, "some window must hold the whole answer"
    for s, e, w in hits:  # the labelled tokens cover exactly the answer's characters
        assert LONG[w.offsets[s][0]:w.offsets[e][1]] == "Paris"
    assert len(hits) < len(labelled)  # the others point at [CLS]: (0, 0)


def test_a_question_too_long_for_the_window_is_refused(qa_task, tokenizer):
    with pytest.raises(RequestError, match="question is .* tokens"):
        qa_task.encode([{"question": "why " * 60, "context": "Because."}], tokenizer, 64)


@pytest.mark.parametrize("bad", [{"question": "Who?"}, {"question": "Who?", "context": "  "}, "a plain text"])
def test_inputs_without_a_context_are_refused(qa_task, tokenizer, bad):
    with pytest.raises(RequestError, match="context"):
        qa_task.encode([bad], tokenizer, 64)


def test_windows_fold_back_to_the_best_span_with_character_offsets(qa_task, tokenizer):
    """Hand-made logits: the best start+end is in the second window; the answer must be the context's
    characters of those tokens, and spans longer than the maximum or ending before they start never win."""
    context = LONG
    feats, windows = qa_task.encode([{"question": "Capital?", "context": context}], tokenizer, 64)
    target = next(i for i, w in enumerate(windows) if any(o and context[o[0]:o[1]] == "Paris" for o in w.offsets))
    rows = []
    for i, w in enumerate(windows):
        n = len(feats[i]["input_ids"])
        start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
        if i == target:
            tok = next(t for t, o in enumerate(w.offsets) if o and context[o[0]:o[1]] == "Paris")
            start[tok], end[tok] = 8.0, 8.0
        elif i == 0:  # higher but invalid: an end before its start, and a span of 31 tokens
            ctx = [t for t, o in enumerate(w.offsets) if o]
            start[:], end[:] = -30.0, -30.0
            start[ctx[-1]], end[ctx[0]] = 20.0, 20.0
            start[ctx[1]], end[ctx[1] + MAX_ANSWER_TOKENS] = 20.0, 20.0
        rows.append({"start_logits": start, "end_logits": end})
    (pred,) = qa_task.decode_rows(rows, windows, {})
    assert pred["answer"] == "Paris"
    assert context[pred["start"]:pred["end"]] == "Paris"
    assert 0 < pred["score"] <= 1


def test_several_inputs_fold_to_one_answer_each_in_order(qa_task, tiny_qa):
    from deploylm.evaluation import predict

    items = [{"question": "Capital?", "context": LONG}, {"question": "Who?", "context": "Bob did it."}]
    preds = predict(tiny_qa.path, items)
    assert len(preds) == 2
    for item, p in zip(items, preds):
        assert item["context"][p["start"]:p["end"]] == p["answer"]


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    return build_tiny_artifact(tmp_path_factory.mktemp("tiny") / "qa", "extractive-qa", max_length=64)
