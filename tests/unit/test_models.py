import pytest

from deploylm.errors import ModelError
from deploylm.models import known_models, resolve_model


def test_packaged_alias_resolves_to_files():
    src = resolve_model("minilm-l6")
    assert src.kind == "alias" and (src.location and __import__("pathlib").Path(src.location, "config.json").is_file())
    assert any(r["alias"] == "minilm-l6" and r["path"] for r in known_models())


def test_unknown_alias_or_path_names_alternatives(tmp_path):
    with pytest.raises(ModelError, match="minilm-l6"):
        resolve_model("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"Hub is offline.*minilm-l6"):
        resolve_model("bert-base-uncased")


def test_hub_id_online_goes_to_from_pretrained(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    src = resolve_model("google-bert/bert-base-uncased")
    assert (src.kind, src.location) == ("hub", "google-bert/bert-base-uncased")
