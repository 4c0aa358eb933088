"""Fine-tuning on a tiny random model: the artifact, the manifest, interruption and resume."""

import json

import pytest
from transformers import AutoModelForSequenceClassification, TrainerCallback

from conftest import reference_predictions

from deploylm.artifacts import Artifact
from deploylm.config import FinetuneConfig
from deploylm.errors import ArtifactError, ConfigError
from deploylm.train import finetune as ft


def _cfg(model, data, **kw):
    base = dict(model=str(model), data=str(data), task="classification", epochs=2, batch_size=8,
                learning_rate=1e-3, max_length=32, logging_steps=2)
    base.update(kw)
    return FinetuneConfig(**base)


def test_finetune_writes_a_loadable_artifact_with_lineage(tiny_cls, sst2_dir, tmp_path):
    art = ft.finetune(_cfg(tiny_cls.path, sst2_dir), tmp_path / "out")
    m = Artifact.open(tmp_path / "out").manifest
    assert m["stage"] == "finetune" and m["task"] == "classification" and m["labels"] == ["0", "1"]
    assert m["parent"]["hash"] == tiny_cls.hash
    assert m["metrics"]["sst2mini:dev"]["samples"] == 32
    dev = [line.split("\t") for line in (sst2_dir / "dev.tsv").read_text().splitlines()[1:]]
    preds = reference_predictions(art.path, [text for text, _ in dev])
    right = sum(label == gold for (label, _), (_, gold) in zip(preds, dev))
    assert m["metrics"]["sst2mini:dev"]["accuracy"] == pytest.approx(right / len(dev))
    assert m["training"]["train_samples"] == 64
    model = AutoModelForSequenceClassification.from_pretrained(art.path)  # plain transformers loads it
    assert model.config.id2label == {0: "0", 1: "1"}
    assert not ft.checkpoint_dir(tmp_path / "out").exists()


def test_finetune_learns_the_easy_toy_task(tiny_cls, sst2_dir, tmp_path):
    art = ft.finetune(_cfg(tiny_cls.path, sst2_dir, epochs=6), tmp_path / "out")
    # the toy data is perfectly separable by word identity; random-weight accuracy is ~0.5
    assert art.metrics["sst2mini:dev"]["accuracy"] >= 0.9


class _Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 11:
            raise KeyboardInterrupt


def test_killed_run_leaves_no_artifact_and_resumes(tiny_cls, sst2_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = _cfg(tiny_cls.path, sst2_dir)
    monkeypatch.setattr(ft, "LossThroughputCallback", _Crash)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(cfg, out)
    assert not out.exists()
    ckpt = ft.checkpoint_dir(out)
    assert (ckpt / "checkpoint-8").is_dir()  # the epoch-1 checkpoint survived the kill
    monkeypatch.undo()
    with pytest.raises(ArtifactError, match="--resume"):
        ft.finetune(cfg, out)
    with pytest.raises(ConfigError, match="learning_rate"):
        ft.finetune(cfg.model_copy(update={"learning_rate": 5e-4}), out, resume=True)
    art = ft.finetune(cfg, out, resume=True)
    assert art.manifest["training"]["resumed"] is True
    assert not ckpt.exists()
    assert json.loads((out / "manifest.json").read_text())["stage"] == "finetune"


def test_task_mismatch_and_output_exists(tiny_cls, sst2_dir, conll_dir, tmp_path):
    with pytest.raises(ConfigError, match="token-classification"):
        ft.finetune(_cfg(tiny_cls.path, conll_dir), tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        ft.finetune(_cfg(tiny_cls.path, sst2_dir), tmp_path / "taken")


def test_token_classification_finetune(tiny_ner, conll_dir, tmp_path):
    art = ft.finetune(_cfg(tiny_ner.path, conll_dir, task="token-classification", epochs=1), tmp_path / "ner")
    assert art.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    rec = art.metrics["conllmini:dev"]
    assert set(rec) >= {"f1", "precision", "recall"}
