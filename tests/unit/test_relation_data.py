"""Relation data: JSONL directories with character spans, SemEval-2010 Task 8's files and its Hub columns; every
bad row is a DataError that names the file, the line and what to fix."""

import json

import pytest

from deploylm.data import load_dataset
from deploylm.data.relations import load_relation_hub, parse_tagged
from deploylm.errors import DataError

GOOD = {"text": "Paris is in France", "head": [0, 5], "tail": [12, 18], "label": "located_in"}

SEMEVAL = (
    '1\t"The system as described above has its greatest application in an arrayed <e1>configuration</e1> of antenna '
    '<e2>elements</e2>."\n'
    "Component-Whole(e2,e1)\n"
    "Comment: Not a collection: there is structure here, organisation.\n"
    "\n"
    '2\t"The <e1>child</e1> was carefully wrapped and bound into the <e2>cradle</e2> by means of a cord."\n'
    "Other\n"
    "Comment:\n"
    "\n"
)


def _write(d, split_rows: dict):
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in split_rows.items():
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_jsonl_directory_is_relation_data(tmp_path):
    d = _write(tmp_path / "rel", {"train": [GOOD, {**GOOD, "label": "other"}], "dev": [GOOD]})
    ds = load_dataset(str(d))
    assert ds.task == "relation-classification"
    assert ds.split("train").inputs[0] == {"text": "Paris is in France", "head": [0, 5], "tail": [12, 18]}
    assert ds.split("train").targets == ["located_in", "other"]


@pytest.mark.parametrize("row,words", [
    ({**GOOD, "tail": [3, 8]}, ["overlap"]),
    ({**GOOD, "tail": [12, 19]}, ["[12, 19]", "18"]),
    ({**GOOD, "head": [-1, 5]}, ["[-1, 5]"]),
    ({**GOOD, "head": [5, 5]}, ["[5, 5]", "non-empty"]),
    ({**GOOD, "head": [0.0, 5]}, ["two integers"]),
    ({k: v for k, v in GOOD.items() if k != "tail"}, ["'tail'"]),
    ({k: v for k, v in GOOD.items() if k != "label"}, ["'label'"]),
])
def test_bad_rows_name_file_line_and_fix(tmp_path, row, words):
    d = _write(tmp_path / "rel", {"train": [GOOD, GOOD, row]})
    with pytest.raises(DataError) as exc:
        load_dataset(str(d))
    msg = str(exc.value)
    assert "train.jsonl line 3" in msg
    for w in words:
        assert w in msg


def test_semeval_files(tmp_path):
    d = tmp_path / "semeval"
    d.mkdir()
    (d / "TRAIN_FILE.TXT").write_text(SEMEVAL)
    (d / "TEST_FILE_FULL.TXT").write_text(SEMEVAL.replace("Other", "Entity-Origin(e1,e2)"))
    ds = load_dataset(str(d))
    assert ds.task == "relation-classification" and sorted(ds.splits) == ["test", "train"]
    train = ds.split("train")
    assert train.targets == ["Component-Whole(e2,e1)", "Other"]
    first = train.inputs[0]
    s, e = first["head"]
    assert first["text"][s:e] == "configuration" and "<e1>" not in first["text"]
    s, e = first["tail"]
    assert first["text"][s:e] == "elements"
    assert train.inputs[1]["text"] == "The child was carefully wrapped and bound into the cradle by means of a cord."
    assert ds.split("test").targets[1] == "Entity-Origin(e1,e2)"


@pytest.mark.parametrize("broken,where", [
    (SEMEVAL.replace("Other\n", ""), "line 6"),  # sentence 2 without its label line
    (SEMEVAL.replace("<e2>cradle</e2>", "cradle"), "line 5"),  # no e2 tags
    (SEMEVAL.replace("1\t", "one\t"), "line 1"),  # not a numbered sentence
    (SEMEVAL.replace("<e1>child</e1>", "<e1>child"), "line 5"),  # unclosed
])
def test_bad_semeval_file(tmp_path, broken, where):
    d = tmp_path / "semeval"
    d.mkdir()
    (d / "TRAIN_FILE.TXT").write_text(broken)
    with pytest.raises(DataError) as exc:
        load_dataset(str(d))
    assert "TRAIN_FILE.TXT" in str(exc.value) and where in str(exc.value)


def test_parse_tagged_offsets_and_refusals():
    assert parse_tagged("<e1>Paris</e1> is in <e2>France</e2>") == {"text": "Paris is in France", "head": [0, 5],
                                                                    "tail": [12, 18]}
    # tail first: offsets still point at the right words
    assert parse_tagged("the <e2>cat</e2> ate <e1>fish</e1>") == {"text": "the cat ate fish", "head": [12, 16],
                                                                  "tail": [4, 7]}
    assert parse_tagged("no tags here") is None
    for bad in ("<e1>a</e1> <e1>b</e1>", "<e1>a <e2>b</e2></e1>", "<e1></e1> x <e2>b</e2>", "</e1>a<e1> <e2>b</e2>"):
        with pytest.raises(ValueError):
            parse_tagged(bad)


def test_hub_columns_sentence_and_relation():
    """The hf: path's conversion on a real `datasets` DatasetDict shaped like SemEvalWorkshop/sem_eval_2010_task_8
    (the Hub itself is not reachable here)."""
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "relation": datasets.ClassLabel(names=["Cause-Effect(e1,e2)", "Other"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["<e1>Smoke</e1> comes from <e2>fire</e2>.",
                                                          "A <e1>b</e1> c <e2>d</e2>"], "relation": [0, 1]}, feats),
        "test": datasets.Dataset.from_dict({"sentence": ["<e1>x</e1> y <e2>z</e2>"], "relation": [1]}, feats),
    })
    ds = load_relation_hub(dd, "SemEvalWorkshop/sem_eval_2010_task_8", "semeval")
    assert ds.task == "relation-classification" and ds.source == "hf:SemEvalWorkshop/sem_eval_2010_task_8"
    assert ds.split("train").targets == ["Cause-Effect(e1,e2)", "Other"]
    assert ds.split("train").inputs[0] == {"text": "Smoke comes from fire.", "head": [0, 5], "tail": [17, 21]}
    assert ds.split("test").targets == ["Other"]
