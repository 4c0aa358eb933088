"""relation-classification on tiny random BERTs: marker insertion, inputs (span dicts and SemEval-tagged strings),
the window that keeps both entities, the model reading the marker positions, fine-tuning to an artifact that
reloads from its directory with the same logits, and predict from the CLI."""

import json

import numpy as np
import pytest

from cli_run import run_inprocess
from relation_data import RELATION_LABELS, build_tiny_relation_artifact, write_relation_dir
from deploylm.errors import RequestError
from deploylm.tasks import get_task
from deploylm.tasks.relation_classification import insert_markers

TASK = get_task("relation-classification")


@pytest.fixture(scope="module")
def tiny_rel(tmp_path_factory):
    return build_tiny_relation_artifact(tmp_path_factory.mktemp("rel") / "art")


@pytest.fixture(scope="module")
def tok(tiny_rel):
    from deploylm.evaluation import load_tokenizer

    return load_tokenizer(tiny_rel)


def test_insert_markers_hand_computed():
    assert insert_markers("Paris is in France", [0, 5], [12, 18]) == "[E1]Paris[/E1] is in [E2]France[/E2]"
    # tail before head, spans touching the text's ends and each other
    assert insert_markers("cat ate fish", [8, 12], [0, 3]) == "[E2]cat[/E2] ate [E1]fish[/E1]"
    assert insert_markers("abcdef", [0, 3], [3, 6]) == "[E1]abc[/E1][E2]def[/E2]"


def test_tagged_string_and_dict_encode_the_same(tok):
    a, _ = TASK.encode(["<e1>Paris</e1> is in <e2>France</e2>"], tok, 64)
    b, _ = TASK.encode([{"text": "Paris is in France", "head": [0, 5], "tail": [12, 18]}], tok, 64)
    assert a == b
    assert tok.convert_ids_to_tokens(a[0]["input_ids"]) == [
        "[CLS]", "[E1]", "paris", "[/E1]", "is", "in", "[E2]", "france", "[/E2]", "[SEP]"]


@pytest.mark.parametrize("bad,words", [
    ({"text": "Paris is in France", "head": [0, 5], "tail": [3, 9]}, "overlap"),
    ({"text": "Paris is in France", "head": [0, 5], "tail": [12, 40]}, "inside the text"),
    ({"text": "Paris", "head": [0, 5]}, "lacks tail"),
    ("Paris is in France", "marks no entities"),
    ("<e1>Paris</e1> is in France", "exactly one"),
    ({"text": "[E1] Paris and Rome", "head": [5, 10], "tail": [15, 19]}, "marker"),
    (42, "tagged string"),
])
def test_bad_inputs_are_400_request_errors(tok, bad, words):
    with pytest.raises(RequestError) as exc:
        TASK.encode([bad], tok, 64)
    assert exc.value.status == 400 and words in str(exc.value) and "inputs[0]" in str(exc.value)


def test_long_text_is_windowed_around_both_markers(tok):
    filler = " ".join(["word"] * 60)
    text = f"{filler} Paris is in France {filler}"
    s = text.index("Paris")
    feats, _ = TASK.encode([{"text": text, "head": [s, s + 5], "tail": [s + 12, s + 18]}], tok, 16)
    tokens = tok.convert_ids_to_tokens(feats[0]["input_ids"])
    assert len(tokens) == 16 and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    inner = ["[E1]", "paris", "[/E1]", "is", "in", "[E2]", "france", "[/E2]"]
    at = tokens.index("[E1]")
    assert tokens[at:at + len(inner)] == inner and set(tokens[1:at]) == {"word"}
    assert len(feats[0]["attention_mask"]) == 16 == len(feats[0]["token_type_ids"])
    # entities further apart than max_length allows are refused, not silently cut
    far = f"Paris {filler} France"
    with pytest.raises(RequestError, match="max_length 16"):
        TASK.encode([{"text": far, "head": [0, 5], "tail": [len(far) - 6, len(far)]}], tok, 16)


def test_model_reads_the_hidden_states_at_e1_and_e2(tiny_rel, tok):
    """logits == classifier([h[E1], h[E2]]) with the positions found here by token, not by the model; a row
    without markers (parity checks' random ids) reads [CLS]."""
    import torch

    model = TASK.load_model(str(tiny_rel.path))
    feats, _ = TASK.encode(["the <e2>cat</e2> sat on the <e1>mat</e1> today"], tok, 64)
    ids = torch.tensor([feats[0]["input_ids"]])
    tokens = tok.convert_ids_to_tokens(feats[0]["input_ids"])
    p1, p2 = tokens.index("[E1]"), tokens.index("[E2]")
    with torch.inference_mode():
        hidden = model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        want = model.classifier(torch.cat([hidden[p1], hidden[p2]]))
        got = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        plain = torch.tensor([[101, 2000, 3000, 102]])
        h0 = model.backbone(input_ids=plain).last_hidden_state[0, 0]
        no_marker = model(input_ids=plain, attention_mask=torch.ones_like(plain)).logits[0]
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(no_marker, model.classifier(torch.cat([h0, h0])), atol=1e-5)


def test_finetune_writes_an_artifact_that_reloads_with_the_same_logits(tiny_cls, tmp_path):
    import torch

    from deploylm.artifacts import Artifact
    from deploylm.config import FinetuneConfig
    from deploylm.evaluation import load_tokenizer
    from deploylm.train.finetune import finetune

    data = write_relation_dir(tmp_path / "rel")
    cfg = FinetuneConfig(model=str(tiny_cls.path), data=str(data), task="relation-classification", epochs=2,
                         batch_size=8, learning_rate=1e-3, max_length=32, logging_steps=2)
    art = finetune(cfg, tmp_path / "out")
    m = Artifact.open(tmp_path / "out").manifest
    assert m["task"] == "relation-classification" and m["labels"] == RELATION_LABELS
    rec = m["metrics"]["rel:dev"]
    assert {"accuracy", "macro_f1", "macro_f1_no_other"} <= set(rec) and rec["samples"] == 16
    assert (art.path / "relation_head.safetensors").is_file()
    saved = json.loads((art.path / "relation_config.json").read_text())
    tok = load_tokenizer(art)
    assert saved["marker_ids"] == tok.convert_tokens_to_ids(["[E1]", "[/E1]", "[E2]", "[/E2]"])
    assert saved["labels"] == RELATION_LABELS

    texts = ["<e1>John Smith</e1> was born in <e2>Oslo</e2> .", "<e1>Hooli</e1> has its headquarters in <e2>Lima</e2> ."]
    feats, _ = TASK.encode(texts, tok, 32)
    a = TASK.load_model(str(art.path))
    b = TASK.load_model(str(art.path))  # twice: nothing random in the rebuild (head loaded, not initialised)
    with torch.inference_mode():
        for f in feats:
            ids = torch.tensor([f["input_ids"]])
            la = a(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            lb = b(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            assert torch.equal(la, lb)
    # the dev metric in the manifest is what the reloaded artifact scores
    from deploylm.data import load_dataset
    from deploylm.evaluation import predict

    dev = load_dataset(str(data)).split("dev")
    preds = predict(art, dev.inputs)
    acc = np.mean([p["label"] == t for p, t in zip(preds, dev.targets)])
    assert rec["accuracy"] == pytest.approx(acc)


def test_score_reports_macro_f1_without_no_relation():
    preds = [{"label": l} for l in ["a", "a", "Other", "b"]]
    s = TASK.score(preds, ["a", "b", "Other", "b"])
    assert s["accuracy"] == pytest.approx(0.75)
    # a: P 1/2 R 1 -> 2/3; b: P 1 R 1/2 -> 2/3; Other: 1.0
    assert s["macro_f1_no_other"] == pytest.approx(2 / 3)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_cli_predict_tagged_text_and_bad_input(tiny_rel, capsys, monkeypatch):
    ok = run_inprocess(capsys, monkeypatch, "predict", tiny_rel.path, "<e1>Paris</e1> is in <e2>France</e2>")
    assert ok.returncode in (0, None)
    label = ok.stdout.split()[0]
    assert label in RELATION_LABELS
    bad = run_inprocess(capsys, monkeypatch, "predict", tiny_rel.path, "<e1>Paris</e1> is in France")
    assert bad.returncode == 2 and "exactly one" in bad.stderr


def test_parity_texts_carry_both_markers():
    ex = {"text": "Paris is in France", "head": [0, 5], "tail": [12, 18]}
    texts = TASK.parity_texts([ex])
    assert texts[0] == "[E1]Paris[/E1] is in [E2]France[/E2]" and len(texts) == 1 + 24
    assert all(all(m in t for m in ("[E1]", "[/E1]", "[E2]", "[/E2]")) for t in texts)
