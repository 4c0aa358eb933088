"""`deploylm extract` end to end on tiny artifacts whose decisions are fixed by their head biases: an NER model
that makes every word an entity and relation models that answer one label for every pair. What is checked is
extract's own work: every ordered pair, indices into `entities`, "no relation" left out, --max-pairs, the CLI."""

import json

import pytest

from cli_run import run_inprocess
from relation_data import build_every_word_ner_artifact, build_tiny_relation_artifact
from deploylm.errors import ConfigError
from deploylm.extract import extract

TEXTS = ["John Smith was born in Oslo .", "Acme hired Li"]
WORDS = [["John", "Smith", "was", "born", "in", "Oslo", "."], ["Acme", "hired", "Li"]]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    return {"ner": build_every_word_ner_artifact(root / "ner"),
            "born": build_tiny_relation_artifact(root / "born", bias={"born_in": 1000.0}),
            "none": build_tiny_relation_artifact(root / "none", bias={"no_relation": 1000.0})}


def test_every_ordered_pair_is_labelled(arts):
    from deploylm.evaluation import predict

    out = extract(arts["ner"].path, arts["born"].path, TEXTS)
    assert [r["text"] for r in out] == TEXTS
    for res, words in zip(out, WORDS):
        ents = res["entities"]
        assert [e["text"] for e in ents] == words and all(e["entity"] == "PER" for e in ents)
        assert all(res["text"][e["start"]:e["end"]] == e["text"] for e in ents)
        n = len(words)
        pairs = [(r["head"], r["tail"]) for r in res["relations"]]
        assert pairs == [(i, j) for i in range(n) for j in range(n) if i != j]
        assert {r["label"] for r in res["relations"]} == {"born_in"} and res["skipped_pairs"] == 0
    # each pair's score is what predict says for that pair given as spans
    first = out[0]
    rel = first["relations"][4]
    a, b = first["entities"][rel["head"]], first["entities"][rel["tail"]]
    ref = predict(arts["born"].path, [{"text": TEXTS[0], "head": [a["start"], a["end"]], "tail": [b["start"], b["end"]]}])
    assert ref[0]["label"] == "born_in" and ref[0]["score"] == pytest.approx(rel["score"])


def test_no_relation_pairs_are_left_out(arts):
    out = extract(arts["ner"].path, arts["none"].path, TEXTS)
    assert [r["relations"] for r in out] == [[], []]
    assert [len(r["entities"]) for r in out] == [7, 3]


def test_max_pairs_keeps_the_closest(arts):
    res = extract(arts["ner"].path, arts["born"].path, TEXTS[1:], max_pairs=4)[0]
    # Acme(0) hired(1) Li(2): adjacent pairs (0,1) (1,0) (1,2) (2,1) are closer than Acme..Li
    assert [(r["head"], r["tail"]) for r in res["relations"]] == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert res["skipped_pairs"] == 2


def test_wrong_artifacts_and_inputs_are_refused(arts):
    with pytest.raises(ConfigError, match="--relations"):
        extract(arts["ner"].path, arts["ner"].path, TEXTS)
    with pytest.raises(ConfigError, match="--ner"):
        extract(arts["born"].path, arts["born"].path, TEXTS)
    with pytest.raises(ConfigError, match="empty"):
        extract(arts["ner"].path, arts["born"].path, ["ok", "  "])
    with pytest.raises(ConfigError, match="max-pairs"):
        extract(arts["ner"].path, arts["born"].path, TEXTS, max_pairs=0)


def test_cli_json_lines_and_input_file(arts, tmp_path, capsys, monkeypatch):
    src = tmp_path / "texts.txt"
    src.write_text(TEXTS[0] + "\n\n" + TEXTS[1] + "\n")
    r = run_inprocess(capsys, monkeypatch, "extract", "--ner", arts["ner"].path, "--relations", arts["born"].path,
                      "--input", src, "--json")
    assert r.returncode in (0, None), r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["text"] for d in docs] == TEXTS
    assert set(docs[1]) == {"text", "entities", "relations", "skipped_pairs"} and len(docs[1]["relations"]) == 6
    plain = run_inprocess(capsys, monkeypatch, "extract", "--ner", arts["ner"].path, "--relations",
                          arts["born"].path, TEXTS[1])
    assert "Acme --born_in--> hired" in plain.stdout
    bad = run_inprocess(capsys, monkeypatch, "extract", "--ner", arts["born"].path, "--relations",
                        arts["born"].path, TEXTS[1])
    assert bad.returncode == 2 and "--ner" in bad.stderr
