"""Relation data and tiny relation artifacts made by the tests (no relation dataset is reachable here)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import minilm_dir

PEOPLE = ["John Smith", "Mary Jones", "Ali Khan", "Li Wei", "Anna Berg", "Tom Hardy"]
PLACES = ["Paris", "Berlin", "Madrid", "Oslo", "Lagos", "Lima"]
ORGS = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries"]
# template, relation label, pool of the head, pool of the tail; the label follows from the words between them
TEMPLATES = [
    ("{h} was born in {t} .", "born_in", PEOPLE, PLACES),
    ("{h} works for {t} .", "works_for", PEOPLE, ORGS),
    ("{h} has its headquarters in {t} .", "based_in", ORGS, PLACES),
    ("{h} and {t} were mentioned in the same article .", "no_relation", PEOPLE, PLACES),
]


def make_row(i: int) -> dict:
    template, label, heads, tails = TEMPLATES[i % len(TEMPLATES)]
    h, t = heads[i % len(heads)], tails[(i // len(TEMPLATES)) % len(tails)]
    text = template.format(h=h, t=t)
    hs = text.index(h)
    ts = text.index(t, hs + len(h))
    return {"text": text, "head": [hs, hs + len(h)], "tail": [ts, ts + len(t)], "label": label}


def write_relation_dir(d: Path, sizes=(("train", 48), ("dev", 16), ("test", 16))) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in sizes:
        rows = [make_row(start + i) for i in range(n)]
        start += n
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


RELATION_LABELS = sorted({t[1] for t in TEMPLATES})


def build_tiny_relation_artifact(out: Path, labels=None, seed: int = 0, max_length: int = 64, head_scale: float = 10.0,
                                 bias: dict | None = None):
    """A real deploylm relation artifact: a random 2-layer BERT (hidden 32), the MiniLM tokenizer with the marker
    tokens, a random head (scaled so logits differ by a few units: parity checks need decided rows). bias:
    label -> head bias, e.g. {"born_in": 100.0} makes every pair that label whatever the encoder says."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from deploylm.artifacts import create_artifact
    from deploylm.tasks import get_task
    from deploylm.tasks.relation_classification import RelationClassifier

    labels = list(labels or RELATION_LABELS)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, initializer_range=0.2,
                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = RelationClassifier(AutoModel.from_config(cfg, attn_implementation="eager"), len(labels))
    get_task("relation-classification").prepare(tok, model)
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
        for label, value in (bias or {}).items():
            model.classifier.bias[labels.index(label)] = value
    model.eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return create_artifact(out, write, stage="finetune", config={"tiny": True, "seed": seed}, parent=None,
                           task="relation-classification", labels=labels, max_length=max_length)


def build_every_word_ner_artifact(out: Path, tag: str = "B-PER", max_length: int = 64):
    """A tiny NER artifact whose head bias tags every word `tag`: each word is its own entity, so the entities of
    a text are known without a trained model."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from conftest import build_tiny_artifact
    from deploylm.artifacts import create_artifact

    labels = ["O", "B-PER", "I-PER"]
    src = build_tiny_artifact(out.parent / f".{out.name}-src", "token-classification", labels=labels)
    model = AutoModelForTokenClassification.from_pretrained(src.path).eval()
    tok = AutoTokenizer.from_pretrained(src.path)
    with torch.no_grad():
        model.classifier.bias[labels.index(tag)] = 1000.0

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return create_artifact(out, write, stage="finetune", config={"tiny": True}, parent=None,
                           task="token-classification", labels=labels, max_length=max_length)
