"""Multi-task encoder (tasks/multi.py, train/multi.py): heads parsing and its errors, joint fine-tuning on tiny
generated data, one forward giving every head, predict's {head: prediction}, ONNX export with parity on all heads,
and AG News' seeded split of its test-only copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deploylm.errors import ConfigError, DataError
from deploylm.tasks.multi import HeadSpec, parse_heads

SST2_POS = ["a great and moving film", "wonderful acting , lovely story", "funny and warm"]
SST2_NEG = ["a dull , tedious mess", "boring and far too long", "awful dialogue , flat acting"]
TOPICS = {"1": "election talks in the capital", "2": "the striker scored twice in the final",
          "3": "shares fell as profits slipped", "4": "a new chip doubles battery life"}
NER = [[("John", "B-PER"), ("lives", "O"), ("in", "O"), ("Paris", "B-LOC"), (".", "O")],
       [("Mary", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Berlin", "B-LOC")]]


def write_data(root: Path) -> dict[str, Path]:
    sst2, ag, conll = root / "sst2", root / "ag_news", root / "conll2003"  # alias names: label names
    for d in (sst2, ag, conll):
        d.mkdir(parents=True)
    for split, n in (("train", 48), ("dev", 16)):
        rows = ["sentence\tlabel"] + [f"{(SST2_POS if i % 2 else SST2_NEG)[i % 3]} {i}\t{i % 2}" for i in range(n)]
        (sst2 / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    # AG News' layout here: test.csv only (label 1-4, title, description)
    rows = ["label,title,description"] + [f"{1 + i % 4},title {i},{TOPICS[str(1 + i % 4)]} {i}" for i in range(76)]
    (ag / "test.csv").write_text("\n".join(rows) + "\n")
    for name, reps in (("eng.train", 16), ("eng.testa", 6)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(reps):
            lines += [f"{tok} NNP B-NP {tag}" for tok, tag in NER[i % 2]] + [""]
        (conll / name).write_text("\n".join(lines))
    return {"sst2": sst2, "ag_news": ag, "conll2003": conll}


def heads_arg(dirs: dict[str, Path]) -> str:
    return (f"sst2={dirs['sst2']}:classification,ag_news={dirs['ag_news']}:classification,"
            f"conll2003={dirs['conll2003']}:token-classification")


@pytest.fixture(scope="module")
def trained(tiny_cls, tmp_path_factory):
    from deploylm.config import FinetuneConfig
    from deploylm.train.multi import finetune_multi

    root = tmp_path_factory.mktemp("multi")
    dirs = write_data(root / "data")
    cfg = FinetuneConfig(model=str(tiny_cls.path), task="multi", heads=heads_arg(dirs), epochs=2, batch_size=8,
                         learning_rate=1e-3, max_length=32, logging_steps=2)
    return finetune_multi(cfg, root / "out"), dirs


def test_parse_heads_names_tasks_and_data():
    assert parse_heads("sst2:classification,conll2003:token-classification") == [
        HeadSpec("sst2", "classification", "sst2"), HeadSpec("conll2003", "token-classification", "conll2003")]
    assert parse_heads("topic=/d/ag:classification") == [HeadSpec("topic", "classification", "/d/ag")]


@pytest.mark.parametrize("spec, says", [
    ("sst2:sentiment", "task 'sentiment' cannot be a head"),
    ("sst2:extractive-qa", "cannot be a head"),
    ("sst2:classification,sst2:classification", "given twice"),
    ("sst2", "is not DATA:TASK"),
    ("Bad-Name=/x:classification", "must be lower-case"),
    ("", "needs --heads"),
])
def test_parse_heads_refuses_bad_specs(spec, says):
    with pytest.raises(ConfigError, match=says):
        parse_heads(spec)


@pytest.mark.parametrize("make_heads, data, error, says", [
    (lambda d: "nosuchset:classification", None, DataError, "does not exist"),
    (lambda d: f"ner={d['conll2003']}:classification", None, ConfigError, "holds token-classification data"),
    (lambda d: f"sst2={d['sst2']}:classification,sst2={d['sst2']}:classification", None, ConfigError, "twice"),
    (lambda d: f"sst2={d['sst2']}:classification", "sst2", ConfigError, "--data is not used"),
])
def test_bad_heads_fail_before_training_and_write_nothing(tiny_cls, tmp_path, make_heads, data, error, says):
    from deploylm.config import FinetuneConfig
    from deploylm.train.finetune import checkpoint_dir, finetune

    dirs = write_data(tmp_path / "data")
    cfg = FinetuneConfig(model=str(tiny_cls.path), task="multi", heads=make_heads(dirs), data=data, max_length=32)
    with pytest.raises(error, match=says):
        finetune(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not checkpoint_dir(tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_heads_without_task_multi_is_refused(tmp_path):
    from deploylm.config import FinetuneConfig
    from deploylm.train.finetune import finetune

    with pytest.raises(ConfigError, match="--heads is for --task multi"):
        finetune(FinetuneConfig(data="sst2", heads="sst2:classification"), tmp_path / "out")


def test_ag_news_test_only_is_split_seeded_and_the_same_for_every_load(tmp_path):
    from deploylm.data import load_dataset

    d = write_data(tmp_path)["ag_news"]
    a, b = load_dataset(str(d)), load_dataset(str(d))
    assert sorted(a.splits) == ["dev", "train"] and len(a.splits["train"]) + len(a.splits["dev"]) == 76
    assert len(a.splits["dev"]) == 16  # 1,600 / 7,600 of 76 rows
    assert a.splits["dev"].inputs == b.splits["dev"].inputs
    assert not set(a.splits["dev"].inputs) & set(a.splits["train"].inputs)
    assert a.info["derived_splits"] == {**a.info["derived_splits"], "from": "test", "seed": 0, "train": 60, "dev": 16}
    assert set(a.splits["train"].targets) == {"World", "Sports", "Business", "Sci/Tech"}  # alias label names


def test_joint_finetune_writes_an_artifact_with_every_head(trained):
    art, _ = trained
    m = art.manifest
    assert m["task"] == "multi"
    assert {"sst2:dev", "ag_news:dev", "conll2003:dev", "multi:dev"} <= set(m["metrics"])
    assert m["metrics"]["sst2:dev"]["samples"] == 16 and "accuracy" in m["metrics"]["sst2:dev"]
    assert "f1" in m["metrics"]["conll2003:dev"]
    mean = (m["metrics"]["sst2:dev"]["accuracy"] + m["metrics"]["ag_news:dev"]["accuracy"]
            + m["metrics"]["conll2003:dev"]["f1"]) / 3
    assert m["metrics"]["multi:dev"]["mean_primary"] == pytest.approx(mean, abs=1e-5)
    ag = next(h for h in m["heads"] if h["name"] == "ag_news")
    assert ag["derived_splits"]["seed"] == 0 and ag["train_samples"] == 60
    saved = json.loads((art.path / "multi_config.json").read_text())
    assert [h["name"] for h in saved["heads"]] == ["sst2", "ag_news", "conll2003"]
    assert saved["heads"][2]["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_one_forward_gives_every_head_and_reloads_the_same(trained):
    from deploylm.evaluation import load_tokenizer
    from deploylm.runtime import open_runner
    from deploylm.runtime.batching import pad_batch
    from deploylm.tasks import task_for

    art, _ = trained
    task = task_for(art)
    assert task.output_names == ("sst2_logits", "ag_news_logits", "conll2003_logits")
    assert task.token_level_outputs == ("conll2003_logits",)
    tok = load_tokenizer(art)
    feats, _ = task.encode(["John lives in Paris .", "a great film"], tok, 32)
    batch = pad_batch(feats, tok.pad_token_id, ("input_ids", "attention_mask", "token_type_ids"))
    a, b = open_runner(art).run(batch), open_runner(art).run(batch)  # twice: heads loaded, not initialised
    assert set(a) == set(task.output_names)
    assert a["sst2_logits"].shape == (2, 2) and a["ag_news_logits"].shape == (2, 4)
    assert a["conll2003_logits"].shape == (2, batch["input_ids"].shape[1], 5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_predict_returns_each_heads_own_decode(trained):
    from deploylm.evaluation import predict
    from deploylm.tasks import task_for

    art, _ = trained
    preds = predict(art, ["John lives in Paris .", "boring and far too long"])
    assert len(preds) == 2 and all(list(p) == ["sst2", "ag_news", "conll2003"] for p in preds)
    assert preds[0]["sst2"]["label"] in ("negative", "positive") and 0 < preds[0]["sst2"]["score"] <= 1
    assert preds[0]["ag_news"]["label"] in ("World", "Sports", "Business", "Sci/Tech")
    assert len(preds[0]["conll2003"]["tags"]) == 5
    for e in preds[0]["conll2003"]["entities"]:  # spans point into the text
        assert "John lives in Paris ."[e["start"]:e["end"]] == e["text"]
    line = task_for(art).show("John lives in Paris .", preds[0])
    assert line.splitlines()[1].startswith("  sst2: ") and "  conll2003: " in line
    oip = task_for(art).oip_values(preds)
    assert set(oip) == {"SST2_LABEL", "SST2_SCORE", "AG_NEWS_LABEL", "AG_NEWS_SCORE", "CONLL2003_ENTITIES"}
    assert oip["AG_NEWS_LABEL"][1].decode() == preds[1]["ag_news"]["label"]


def test_export_names_every_head_and_ort_matches_torch(trained, tmp_path):
    import onnx

    from deploylm.evaluation import load_tokenizer
    from deploylm.optimize.export_onnx import export
    from deploylm.optimize.gate import GateOptions
    from deploylm.runtime import open_runner
    from deploylm.runtime.batching import pad_batch
    from deploylm.tasks import task_for

    art, _ = trained
    onx = export(art, tmp_path / "onnx", gate=GateOptions(allow_slower=True))
    graph = onnx.load(str(onx.path / "model.onnx")).graph
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert set(outs) == {"sst2_logits", "ag_news_logits", "conll2003_logits"}
    assert outs["conll2003_logits"][:2] == ["batch", "sequence"] and outs["sst2_logits"][0] == "batch"
    for inputs in ("random", "real"):  # the parity check compared every head
        assert set(onx.manifest["parity"][inputs]["outputs"]) == set(outs)
    tok = load_tokenizer(onx)
    texts = ["John lives in Paris .", "shares fell as profits slipped in the third quarter"]
    feats, _ = task_for(onx).encode(texts, tok, 32)
    ort, pt = open_runner(onx), open_runner(art)
    batch = pad_batch(feats, tok.pad_token_id, ort.input_names)
    got, want = ort.run(batch), pt.run(batch)
    for k in outs:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4)
    from deploylm.evaluation import predict

    for a, b in zip(predict(onx, texts), predict(art, texts)):
        assert a["sst2"]["label"] == b["sst2"]["label"] and a["ag_news"]["label"] == b["ag_news"]["label"]
        assert a["sst2"]["score"] == pytest.approx(b["sst2"]["score"], abs=1e-4)
        assert a["conll2003"]["tags"] == b["conll2003"]["tags"]
