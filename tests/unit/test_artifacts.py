import json
import shutil

import pytest

from deploylm.artifacts import MANIFEST, Artifact, create_artifact
from deploylm.errors import ArtifactError


def _make(out, payload=b"weights", **kw):
    def write(tmp):
        (tmp / "model.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "vocab.txt").write_text("a\nb\n")

    return create_artifact(out, write, stage="test", config={"k": 1}, parent={"path": "base", "hash": "0" * 64},
                           task="classification", labels=["a", "b"], max_length=16, **kw)


def test_created_artifact_reopens_with_verified_hashes(tmp_path):
    art = _make(tmp_path / "a")
    again = Artifact.open(tmp_path / "a")
    assert again.manifest["files"].keys() == {"model.bin", "sub/vocab.txt"}
    assert again.hash == art.hash and again.labels == ["a", "b"]
    assert again.manifest["parent"]["hash"] == "0" * 64
    assert again.manifest["versions"]["torch"] is not None


@pytest.mark.parametrize("damage", ["alter", "truncate", "delete"])
def test_damaged_file_is_refused(tmp_path, damage):
    _make(tmp_path / "a", payload=b"x" * 1000)
    f = tmp_path / "a" / "model.bin"
    if damage == "alter":
        f.write_bytes(b"y" + b"x" * 999)
    elif damage == "truncate":
        f.write_bytes(b"x" * 10)
    else:
        f.unlink()
    with pytest.raises(ArtifactError, match="model.bin"):
        Artifact.open(tmp_path / "a")


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    _make(tmp_path / "a", payload=b"first")
    with pytest.raises(ArtifactError, match="--overwrite"):
        _make(tmp_path / "a", payload=b"second")
    assert (tmp_path / "a" / "model.bin").read_bytes() == b"first"
    _make(tmp_path / "a", payload=b"second", overwrite=True)
    assert (tmp_path / "a" / "model.bin").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_crash_while_writing_leaves_nothing(tmp_path):
    def write(tmp):
        (tmp / "model.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        create_artifact(tmp_path / "a", write, stage="t", config={}, parent=None, task="classification",
                        labels=["a", "b"], max_length=8)
    assert list(tmp_path.iterdir()) == []


def test_directory_without_manifest_is_not_an_artifact(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not a complete deploylm artifact"):
        Artifact.open(tmp_path / "half")
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.open(tmp_path / "missing")


def test_recorded_measurements_keep_the_artifact_valid(tmp_path):
    art = _make(tmp_path / "a")
    art.update_manifest("metrics", "sst2:dev", {"accuracy": 0.9})
    again = Artifact.open(tmp_path / "a")
    assert again.metrics["sst2:dev"]["accuracy"] == 0.9
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["hash"] == art.hash


def test_lineage_follows_parents(tmp_path):
    first = _make(tmp_path / "a")

    def write(tmp):
        shutil.copy(tmp_path / "a" / "model.bin", tmp / "model.bin")

    second = create_artifact(tmp_path / "b", write, stage="quantize", config={}, parent=first.as_parent(),
                             task="classification", labels=["a", "b"], max_length=16)
    chain = Artifact.open(second.path).lineage()
    assert chain[0]["hash"] == first.hash and chain[1]["path"] == "base"
