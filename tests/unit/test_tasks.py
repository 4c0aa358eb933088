import numpy as np
from transformers import AutoTokenizer

from deploylm.runtime import open_runner
from deploylm.tasks import get_task
from deploylm.tasks.token_classification import group_entities


def test_iob2_grouping():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-ORG", "B-LOC", "B-LOC"]
    assert group_entities(tags) == [("PER", 0, 1), ("LOC", 3, 4), ("ORG", 5, 5), ("LOC", 6, 6), ("LOC", 7, 7)]


def test_word_piece_label_alignment(tiny_ner):
    from deploylm.data import Examples

    tok = AutoTokenizer.from_pretrained(tiny_ner.path)
    task = get_task("token-classification")
    label2id = {l: i for i, l in enumerate(tiny_ner.labels)}
    ex = Examples([["Johannesburgers", "visit", "Paris"]], [["B-PER", "O", "B-LOC"]])
    feats = task.train_features(ex, tok, label2id, 32)
    labels = feats[0]["labels"]
    pieces = tok.convert_ids_to_tokens(feats[0]["input_ids"])
    assert len(pieces) > 5  # "johannesburgers" splits into several pieces
    kept = [(p, l) for p, l in zip(pieces, labels) if l != -100]
    assert kept == [(pieces[1], label2id["B-PER"]), ("visit", 0), ("paris", label2id["B-LOC"])]


def test_entity_spans_point_into_the_raw_text(tiny_ner):
    tok = AutoTokenizer.from_pretrained(tiny_ner.path)
    task = get_task("token-classification")
    text = "Angela Merkel visited Washington."
    feats, aux = task.encode([text], tok, 32)
    n = len(feats[0]["input_ids"])
    logits = np.zeros((n, len(tiny_ner.labels)))
    # force word 0-1 = PER, word 3 = LOC on their first pieces
    idx = {l: i for i, l in enumerate(tiny_ner.labels)}
    first = aux[0]["first"]
    for w, tag in ((0, "B-PER"), (1, "I-PER"), (3, "B-LOC")):
        logits[first[w], idx[tag]] = 5
    for w in (2, 4):
        logits[first[w], idx["O"]] = 5
    out = task.decode(logits, aux[0], dict(enumerate(tiny_ner.labels)))
    assert [(e["entity"], e["text"]) for e in out["entities"]] == [("PER", "Angela Merkel"), ("LOC", "Washington")]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in out["entities"])


def test_predict_through_runner_matches_direct_model_call(tiny_cls):
    import torch

    runner = open_runner(tiny_cls)
    tok = AutoTokenizer.from_pretrained(tiny_cls.path)
    texts = ["short", "a much longer sentence that pads the others in its batch", "medium length text"]
    preds = get_task("classification").predict(runner, tok, texts, tiny_cls.labels, 64, batch_size=2)
    for text, p in zip(texts, preds):
        with torch.no_grad():
            logits = runner.model(**tok(text, return_tensors="pt")).logits[0]
        probs = torch.softmax(logits, -1)
        assert p["label"] == tiny_cls.labels[int(probs.argmax())]
        assert abs(p["score"] - float(probs.max())) < 1e-5


def test_length_batches_respect_size_and_token_budget():
    from deploylm.runtime.batching import length_batches, pad_batch

    feats = [{"input_ids": [1] * n, "attention_mask": [1] * n} for n in (5, 50, 3, 40, 7, 60)]
    batches = list(length_batches(feats, batch_size=2))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) <= 2 for b in batches)
    assert batches[0] == [2, 0]  # shortest first
    budget = list(length_batches(feats, batch_size=10, max_tokens=100))
    assert all(max(len(feats[i]["input_ids"]) for i in b) * len(b) <= 100 for b in budget)
    padded = pad_batch([feats[2], feats[0]], pad_id=0, names=("input_ids", "attention_mask"))
    assert padded["input_ids"].shape == (2, 5) and padded["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
