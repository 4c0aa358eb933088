import pytest

from deploylm.data import load_dataset
from deploylm.errors import DataError
from deploylm.tasks import get_task


def test_sst2_layout(sst2_dir):
    ds = load_dataset(str(sst2_dir))
    assert ds.task == "classification"
    assert len(ds.split("train")) == 64 and len(ds.split("dev")) == 32
    assert set(ds.split("train").targets) == {"0", "1"}


def test_conll_layout(conll_dir):
    ds = load_dataset(str(conll_dir))
    assert ds.task == "token-classification"
    train = ds.split("train")
    assert train.inputs[0] == ["John", "lives", "in", "Paris", "."]
    assert train.targets[1] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert len(ds.split("dev")) == 4 and len(ds.split("test")) == 4


def test_csv_and_jsonl_with_named_columns(tmp_path):
    d = tmp_path / "csvdata"
    d.mkdir()
    (d / "train.csv").write_text('body,stars\n"good, really",pos\nbad,neg\n')
    (d / "valid.csv").write_text("body,stars\nfine,pos\n")
    ds = load_dataset(str(d), text_column="body", label_column="stars")
    assert ds.split("train").inputs == ["good, really", "bad"]
    assert ds.split("dev").targets == ["pos"]
    j = tmp_path / "jl"
    j.mkdir()
    (j / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert load_dataset(str(j)).split("train").targets == ["x", "y"]


def test_wrong_column_names_list_the_real_ones(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "train.csv").write_text("body,stars\nx,1\n")
    with pytest.raises(DataError, match=r"no column 'review'.*body, stars"):
        load_dataset(str(d), text_column="review")
    with pytest.raises(DataError, match="--text-column"):
        load_dataset(str(d))


def test_empty_dataset_is_refused(tmp_path):
    d = tmp_path / "e"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="empty"):
        load_dataset(str(d)).split("train")


def test_missing_path_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "data.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="not in a layout"):
        load_dataset(str(tmp_path / "odd"))


def test_alias_without_local_copy_offline_says_set_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYLM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="DEPLOYLM_DATA_DIR"):
        load_dataset("sst2")
    with pytest.raises(DataError, match="offline"):
        load_dataset("hf:nyu-mll/glue:sst2")


def test_alias_resolves_in_data_dir_with_label_names(sst2_dir, monkeypatch):
    (sst2_dir.parent / "sst2").symlink_to(sst2_dir)
    monkeypatch.setenv("DEPLOYLM_DATA_DIR", str(sst2_dir.parent))
    assert set(load_dataset("sst2").split("dev").targets) == {"negative", "positive"}


def test_labels_outside_the_label_set_are_refused():
    task = get_task("classification")
    with pytest.raises(DataError, match=r"outside the model's label set: \['neutral'\]"):
        task.check_targets(["positive", "neutral"], ["negative", "positive"], "dev")
    ner = get_task("token-classification")
    with pytest.raises(DataError, match="B-ORG"):
        ner.check_targets([["O", "B-ORG"]], ["O", "B-PER", "I-PER"], "dev")
