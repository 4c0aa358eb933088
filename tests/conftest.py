"""Shared fixtures. Unit tests use tiny random-weight models built here (seconds, no downloads);
the tokenizer is the packaged MiniLM's (on local disk), so text handling is real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The datasets: where .ci/run and the README point DEPLOYLM_DATA_DIR, else beside the checkout.
SHARED_DATA = Path(os.environ.get("DEPLOYLM_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def minilm_dir() -> Path:
    from deploylm.models import resolve_model

    return Path(resolve_model("minilm-l6").location)


@pytest.fixture(autouse=True, scope="session")
def _library_logs_in_tmp(tmp_path_factory):
    """CLI runs (in-process and subprocesses) write their library-warning logs under pytest's tmp, not the repo."""
    os.environ["DEPLOYLM_LOG_DIR"] = str(tmp_path_factory.mktemp("deploylm-logs"))


HEAD_SCALE = 10.0  # tiny classifier heads: see build_tiny_artifact


def build_tiny_artifact(out: Path, task: str = "classification", labels=None, seed: int = 0, max_length: int = 64,
                        attn: str = "eager", **sizes):
    """A real deploylm artifact holding a random 2-layer BERT (hidden 32) with the MiniLM tokenizer; `sizes`
    (BertConfig fields such as hidden_size) make it bigger where a test needs real activation sizes."""
    import torch
    from transformers import AutoTokenizer, BertConfig

    from deploylm.artifacts import create_artifact
    from deploylm.tasks import get_task

    if labels is None:
        labels = {"classification": ["negative", "positive"], "extractive-qa": []}.get(
            task, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, **sizes}
    cfg = BertConfig(vocab_size=tok.vocab_size, **shape, max_position_embeddings=128, num_labels=len(labels) or 2,
                     initializer_range=0.2,  # with HEAD_SCALE: logit gaps of a few units, so parity has decisions
                     **({"id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}}
                        if labels else {}))
    import transformers

    auto = getattr(transformers, get_task(task).auto_model)
    model = auto.from_config(cfg, attn_implementation=attn).eval()
    with torch.no_grad():  # logits of a few units, not hundredths: parity checks need clearly decided positions
        (model.qa_outputs if task == "extractive-qa" else model.classifier).weight.mul_(HEAD_SCALE)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return create_artifact(out, write, stage="finetune", config={"tiny": True, "seed": seed}, parent=None,
                           task=task, labels=list(labels), max_length=max_length)


def reference_predictions(artifact_path, texts: list[str]) -> list[tuple[str, float]]:
    """(label, top softmax score) per text from a plain transformers forward of a classification artifact: what
    every served or CLI prediction of it must equal (computed without deploylm's runtime)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(artifact_path)
    model = AutoModelForSequenceClassification.from_pretrained(artifact_path).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            probs = model(**tok(text, return_tensors="pt")).logits[0].softmax(-1)
            out.append((model.config.id2label[int(probs.argmax())], float(probs.max())))
    return out


@pytest.fixture(scope="session")
def tiny_cls(tmp_path_factory):
    """Tiny random classification artifact (session-wide; do not modify it — copy it first)."""
    return build_tiny_artifact(tmp_path_factory.mktemp("tiny") / "cls", "classification")


@pytest.fixture(scope="session")
def tiny_ner(tmp_path_factory):
    return build_tiny_artifact(tmp_path_factory.mktemp("tiny") / "ner", "token-classification")


@pytest.fixture
def sst2_dir(tmp_path) -> Path:
    """A small SST-2-layout dataset written by the test (train 64 / dev 32 rows)."""
    d = tmp_path / "sst2mini"
    d.mkdir()
    pos = ["a great and moving film", "wonderful acting , lovely story", "funny and warm", "a delight from start to end"]
    neg = ["a dull , tedious mess", "boring and far too long", "the plot makes no sense", "awful dialogue , flat acting"]
    for split, n in (("train", 64), ("dev", 32)):
        rows = ["sentence\tlabel"] + [f"{(pos if i % 2 else neg)[i % 4]} {i}\t{i % 2}" for i in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture
def conll_dir(tmp_path) -> Path:
    d = tmp_path / "conllmini"
    d.mkdir()
    sents = [
        [("John", "B-PER"), ("lives", "O"), ("in", "O"), ("Paris", "B-LOC"), (".", "O")],
        [("Mary", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Berlin", "B-LOC")],
    ]
    for name, reps in (("eng.train", 16), ("eng.testa", 4), ("eng.testb", 4)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(reps):
            for tok, tag in sents[i % 2]:
                lines.append(f"{tok} NNP B-NP {tag}")
            lines.append("")
        (d / name).write_text("\n".join(lines))
    return d


@pytest.fixture(scope="session")
def smollm2_artifact(tmp_path_factory):
    """SmolLM2-135M-Instruct imported once per test session from the packaged GGUF (make install installs it)."""
    from deploylm.models.importer import import_decoder

    return import_decoder("smollm2-135m", tmp_path_factory.mktemp("smollm2") / "smollm2")
