"""Distillation on tiny random models: the student moves toward its teacher, a layer-subset student is the
teacher's own layers, different tokenizers line up on words, unlabelled text gets the soft term only, the
manifest says where the student came from, and bad input is refused before anything is written."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_artifact, minilm_dir

from deploylm.compress import distill as dl
from deploylm.compress.kd import HAS_LABEL, TEACHER_LOGITS, kd_loss
from deploylm.compress.student import layer_subset, uniform_layers
from deploylm.config import DistillConfig, FinetuneConfig
from deploylm.errors import ConfigError, DataError
from deploylm.train import finetune as ft


def _cfg(teacher, data, **kw):
    base = dict(teacher=str(teacher), data=str(data), epochs=2, batch_size=8, learning_rate=1e-3, max_length=32,
                logging_steps=2)
    base.update(kw)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 4-layer tiny classifier whose labels are the toy SST-2 data's."""
    return build_tiny_artifact(tmp_path_factory.mktemp("t") / "teacher", labels=["0", "1"], num_hidden_layers=4)


@pytest.fixture(scope="module")
def ner_teacher(tmp_path_factory):
    return build_tiny_artifact(tmp_path_factory.mktemp("t") / "ner", "token-classification", num_hidden_layers=4)


def char_tokenizer(folder: Path):
    """A BERT tokenizer that splits every word into characters: another tokenizer than the teacher's (MiniLM's)."""
    from transformers import BertTokenizerFast

    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars) + [f"##{c}" for c in chars]
    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})
    assert tok.tokenize("go 1") == ["g", "##o", "1"]
    tok.save_pretrained(folder)
    return tok


def bare_student(folder: Path, tokenizer=None, seed: int = 5, **sizes):
    """A plain HF directory with a random 2-layer BERT encoder (no head) and its tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tok = tokenizer or AutoTokenizer.from_pretrained(minilm_dir())
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, **sizes}
    model = BertModel(BertConfig(vocab_size=len(tok), max_position_embeddings=128, **shape))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _logits(path, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return torch.cat([model(**tok(t, return_tensors="pt")).logits for t in texts])


def _dev_texts(sst2_dir):
    return [line.split("\t")[0] for line in (sst2_dir / "dev.tsv").read_text().splitlines()[1:]]


# --- the layer mapping and the layer-subset student --------------------------------------------------------------

@pytest.mark.parametrize("layers,n,kept", [(6, 3, [1, 3, 5]), (12, 6, [1, 3, 5, 7, 9, 11]), (4, 2, [1, 3]),
                                           (6, 4, [1, 2, 4, 5]), (6, 1, [5]), (3, 3, [0, 1, 2])])
def test_uniform_mapping_keeps_the_last_layer_of_each_block(layers, n, kept):
    assert uniform_layers(layers, n) == kept


def test_a_layer_subset_student_is_the_teachers_mapped_layers(teacher):
    from transformers import AutoModelForSequenceClassification

    t = AutoModelForSequenceClassification.from_pretrained(teacher.path)
    s, kept = layer_subset(t, 2, "AutoModelForSequenceClassification")
    assert kept == [1, 3] and s.config.num_hidden_layers == 2 and len(s.bert.encoder.layer) == 2
    ts, ss = t.state_dict(), s.state_dict()
    for name, value in ss.items():
        if ".encoder.layer." in name:
            i, rest = name.split(".encoder.layer.")[1].split(".", 1)
            want = ts[f"bert.encoder.layer.{kept[int(i)]}.{rest}"]
        else:  # embeddings, pooler, classifier
            want = ts[name]
        assert torch.equal(value, want), name
    assert {k for k in ts if ".encoder.layer." not in k} == {k for k in ss if ".encoder.layer." not in k}


def test_student_layers_artifact_records_teacher_and_init_and_reloads_plainly(teacher, sst2_dir, tmp_path):
    from transformers import AutoConfig

    art = dl.distill(_cfg(teacher.path, sst2_dir, student_layers=2, epochs=1), tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["stage"] == "distill" and m["parent"]["hash"] == teacher.hash
    assert m["config"]["teacher"] == str(teacher.path) and m["config"]["student_layers"] == 2
    assert m["config"]["student"] is None and m["config"]["temperature"] == 2.0 and m["config"]["alpha"] == 0.5
    d = m["distillation"]
    assert d["init"] == "teacher layers" and d["layers_kept"] == [1, 3] and d["teacher_layers"] == 4
    assert d["losses"] == ["kd"] and d["teacher"]["hash"] == teacher.hash
    assert m["labels"] == ["0", "1"] and m["metrics"]["sst2mini:dev"]["samples"] == 32
    assert m["training"]["train_samples"] == 64
    assert AutoConfig.from_pretrained(art.path).num_hidden_layers == 2
    assert not ft.checkpoint_dir(tmp_path / "out").exists()


# --- the student learns the teacher ------------------------------------------------------------------------------

def _soft_gap(student_logits, teacher_logits):
    return kd_loss(student_logits, teacher_logits, None, temperature=2.0, alpha=1.0).item()


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """(teacher, data): the tiny teacher fine-tuned on the toy SST-2 data, so its soft targets carry the task."""
    from conftest import sst2_dir

    data = sst2_dir.__wrapped__(tmp_path_factory.mktemp("toy"))
    t = build_tiny_artifact(tmp_path_factory.mktemp("t") / "t0", labels=["0", "1"], num_hidden_layers=4)
    cfg = FinetuneConfig(model=str(t.path), data=str(data), epochs=3, batch_size=8, learning_rate=1e-3,
                         max_length=32)
    return ft.finetune(cfg, t.path.parent / "taught"), data


def test_distillation_moves_a_random_student_toward_the_teacher(taught, tmp_path):
    teacher, data = taught
    student = build_tiny_artifact(tmp_path / "student", labels=["0", "1"], seed=7)  # another random model
    texts = _dev_texts(data)
    target = _logits(teacher.path, texts)
    before = _soft_gap(_logits(student.path, texts), target)
    art = dl.distill(_cfg(teacher.path, data, student=str(student.path), alpha=1.0, epochs=3), tmp_path / "out")
    after = _soft_gap(_logits(art.path, texts), target)
    assert after < 0.5 * before, (before, after)
    # alpha 1: the student never saw a hard label, so what it knows of the task came from the teacher
    assert art.metrics[f"{data.name}:dev"]["accuracy"] >= 0.9
    d = art.manifest["distillation"]
    assert d["init"] == str(student.path) and d["head"] == "kept" and d["student"]["hash"] == student.hash


def test_a_student_with_another_tokenizer_learns_the_teacher_too(taught, tmp_path):
    teacher, data = taught
    folder = bare_student(tmp_path / "chars", char_tokenizer(tmp_path / "tok"))
    texts = _dev_texts(data)
    target = _logits(teacher.path, texts)
    before = _soft_gap(_logits(folder, texts), target)  # the encoder with a fresh head
    art = dl.distill(_cfg(teacher.path, data, student=str(folder), alpha=1.0, epochs=6, learning_rate=3e-3,
                          max_length=48), tmp_path / "out")
    after = _soft_gap(_logits(art.path, texts), target)
    assert after < 0.85 * before, (before, after)
    assert art.metrics[f"{data.name}:dev"]["accuracy"] >= 0.9
    assert art.manifest["distillation"]["head"] == "new" and art.manifest["labels"] == ["0", "1"]


def test_token_classification_lines_teacher_and_student_up_on_words(ner_teacher, conll_dir, tmp_path):
    """With different tokenizers, each student word's first sub-token gets the teacher's logits at that same
    word's first sub-token: what the teacher itself predicts for the word."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from deploylm.data import load_dataset
    from deploylm.tasks import get_task

    task = get_task("token-classification")
    t_tok, s_tok = AutoTokenizer.from_pretrained(ner_teacher.path), char_tokenizer(tmp_path / "tok")
    ex = load_dataset(str(conll_dir)).split("dev")
    label2id = {l: i for i, l in enumerate(ner_teacher.labels)}
    rows, shared = dl.kd_features(task, [(ex, True)], s_tok, t_tok, label2id, 64)
    assert not shared
    model = AutoModelForTokenClassification.from_pretrained(ner_teacher.path).eval()
    dl.attach_teacher_logits(task, model, rows, 4, "cpu")
    words = ex.inputs[1]  # Mary Smith visited Berlin
    enc = t_tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        own = model(**enc).logits[0]
    t_first = [enc.word_ids().index(w) for w in range(len(words))]
    s_enc = s_tok(words, is_split_into_words=True)
    s_first = [s_enc.word_ids().index(w) for w in range(len(words))]
    target = torch.as_tensor(rows[1]["student"][TEACHER_LOGITS])
    for w in range(len(words)):
        assert torch.allclose(target[s_first[w]], own[t_first[w]], atol=1e-5)
    labelled = [p for p, l in enumerate(rows[1]["student"]["labels"]) if l != -100]
    assert labelled == s_first  # one position per word, as the task labels them


def test_token_classification_distils_with_another_tokenizer(ner_teacher, conll_dir, tmp_path):
    folder = bare_student(tmp_path / "chars", char_tokenizer(tmp_path / "tok"))
    art = dl.distill(_cfg(ner_teacher.path, conll_dir, student=str(folder), epochs=1), tmp_path / "out")
    assert art.task == "token-classification" and art.labels == ner_teacher.labels
    assert "f1" in art.metrics["conllmini:dev"]


def test_layer_losses_train_a_layer_subset_student(teacher, sst2_dir, tmp_path):
    art = dl.distill(_cfg(teacher.path, sst2_dir, student_layers=2, epochs=1, hidden_loss=True,
                          attention_loss=True), tmp_path / "out")
    d = art.manifest["distillation"]
    assert d["losses"] == ["kd", "hidden", "attention"] and d["teacher_targets"] == "each step"


# --- unlabelled transfer text --------------------------------------------------------------------------------------

def test_rows_without_a_hard_label_count_in_the_soft_term_only():
    s = torch.tensor([[1.0, -1.0], [0.5, 0.2], [-0.3, 0.9]])
    t = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.1, 0.1]])
    labels, has = torch.tensor([1, 0, 0]), torch.tensor([True, False, True])
    soft = kd_loss(s, t, None, temperature=2.0, alpha=1.0)  # every row
    hard = torch.nn.functional.cross_entropy(s[[0, 2]], labels[[0, 2]])  # the labelled rows only
    got = kd_loss(s, t, labels, temperature=2.0, alpha=0.3, has_label=has)
    assert got.item() == pytest.approx(0.3 * soft.item() + 0.7 * hard.item(), rel=1e-5)
    none = kd_loss(s, t, labels, temperature=2.0, alpha=0.3, has_label=torch.tensor([False] * 3))
    assert none.item() == pytest.approx(0.3 * soft.item(), rel=1e-5)


def test_unlabelled_token_rows_keep_minus_100_positions_out_of_both_terms():
    s = torch.tensor([[[1.0, 0.0], [3.0, -3.0]], [[0.2, 0.1], [0.0, 2.0]]])
    t = torch.tensor([[[0.0, 1.0], [-3.0, 3.0]], [[1.0, 0.0], [0.5, 0.5]]])
    labels = torch.tensor([[0, -100], [1, 0]])  # row 1 unlabelled: its labels only mark positions
    got = kd_loss(s, t, labels, temperature=1.0, alpha=0.5, has_label=torch.tensor([True, False]))
    keep = torch.tensor([[True, False], [True, True]])
    soft = kd_loss(s[keep], t[keep], None, temperature=1.0, alpha=1.0)
    hard = torch.nn.functional.cross_entropy(s[0, :1], labels[0, :1])
    assert got.item() == pytest.approx(0.5 * soft.item() + 0.5 * hard.item(), rel=1e-5)


def test_extra_text_from_a_file_or_an_unlabelled_split_joins_training(teacher, sst2_dir, tmp_path):
    (sst2_dir / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tan unseen review {i}\n" for i in range(10)))
    lines = tmp_path / "extra.txt"
    lines.write_text("first text\n\nsecond text\nthird\n")
    task = dl.open_teacher(str(teacher.path))[1]
    assert dl.load_extra_text(str(lines), task, None, 0).inputs == ["first text", "second text", "third"]
    assert len(dl.load_extra_text(f"{sst2_dir}:test", task, 4, 0)) == 4
    art = dl.distill(_cfg(teacher.path, sst2_dir, student_layers=2, epochs=1, extra_text=f"{sst2_dir}:test"),
                     tmp_path / "out")
    assert art.manifest["training"]["train_samples"] == 74
    assert art.manifest["distillation"]["extra_text"] == {"source": f"{sst2_dir}:test", "rows": 10}


def test_unlabelled_sentences_join_token_classification_training(ner_teacher, conll_dir, tmp_path):
    lines = tmp_path / "extra.txt"
    lines.write_text("Anna flew to Rome .\nPeter met Maria in Oslo\n")
    art = dl.distill(_cfg(ner_teacher.path, conll_dir, student_layers=2, epochs=1, extra_text=str(lines)),
                     tmp_path / "out")
    assert art.manifest["training"]["train_samples"] == 16 + 2
    assert art.manifest["distillation"]["extra_text"]["rows"] == 2


def test_the_collator_pads_token_logits_and_flags_rows():
    from transformers import AutoTokenizer, DataCollatorForTokenClassification

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    feats = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": [-100, 0, -100],
              TEACHER_LOGITS: [[0.0, 1.0]] * 3, HAS_LABEL: True},
             {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": [-100, -100],
              TEACHER_LOGITS: [[2.0, 3.0]] * 2, HAS_LABEL: False}]
    batch = dl.KDCollator(DataCollatorForTokenClassification(tok))(feats)
    assert batch[TEACHER_LOGITS].shape == (2, 3, 2) and batch[TEACHER_LOGITS][1, 2].tolist() == [0.0, 0.0]
    assert batch[HAS_LABEL].tolist() == [True, False] and batch["labels"][1].tolist() == [-100, -100, -100]


# --- bad input: a clear error, nothing written ---------------------------------------------------------------------

def _refused(cfg, tmp_path, error, match):
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        dl.distill(cfg, out)
    assert not out.exists() and not ft.checkpoint_dir(out).exists()


def test_both_or_neither_student_option(teacher, sst2_dir, tmp_path):
    _refused(_cfg(teacher.path, sst2_dir), tmp_path, ConfigError, "neither was given")
    _refused(_cfg(teacher.path, sst2_dir, student="minilm-l6", student_layers=2), tmp_path, ConfigError,
             "both were given")


def test_more_student_layers_than_the_teacher_has(teacher, sst2_dir, tmp_path):
    _refused(_cfg(teacher.path, sst2_dir, student_layers=5), tmp_path, ConfigError, "the teacher has 4 layers")
    with pytest.raises(ConfigError, match="student_layers"):
        from deploylm.config import build_config

        build_config(DistillConfig, {"data": "x", "student_layers": 0})


def test_a_student_of_another_task_or_label_set(teacher, sst2_dir, tmp_path):
    ner = build_tiny_artifact(tmp_path / "ner", "token-classification")
    _refused(_cfg(teacher.path, sst2_dir, student=str(ner.path)), tmp_path, ConfigError, "same task and label set")
    other = build_tiny_artifact(tmp_path / "other", labels=["neg", "pos"])
    _refused(_cfg(teacher.path, sst2_dir, student=str(other.path)), tmp_path, ConfigError, r"\['neg', 'pos'\]")
    (other.path / "manifest.json").unlink()  # a plain HF directory with that head
    _refused(_cfg(teacher.path, sst2_dir, student=str(other.path)), tmp_path, ConfigError, "teacher's are")
    (ner.path / "manifest.json").unlink()
    _refused(_cfg(teacher.path, sst2_dir, student=str(ner.path)), tmp_path, ConfigError, "ForTokenClassification head")


def test_missing_or_mismatched_data(teacher, sst2_dir, conll_dir, tmp_path):
    _refused(_cfg(teacher.path, tmp_path / "nowhere", student_layers=2), tmp_path, DataError, "does not exist")
    _refused(_cfg(teacher.path, conll_dir, student_layers=2), tmp_path, ConfigError, "token-classification data")
    _refused(_cfg(teacher.path, sst2_dir, student_layers=2, extra_text=str(tmp_path / "none.txt")), tmp_path,
             DataError, "--extra-text")
    _refused(_cfg(tmp_path / "no-teacher", sst2_dir, student_layers=2), tmp_path, Exception, "does not exist")
    named = build_tiny_artifact(tmp_path / "named", labels=["negative", "positive"])  # the data's labels are 0/1
    _refused(_cfg(named.path, sst2_dir, student_layers=1), tmp_path, DataError, "the teacher's labels")


def test_layer_losses_need_the_same_tokenizer_and_shapes(teacher, sst2_dir, tmp_path):
    wide = bare_student(tmp_path / "wide", hidden_size=48, num_attention_heads=3)
    _refused(_cfg(teacher.path, sst2_dir, student=str(wide), hidden_loss=True), tmp_path, ConfigError,
             "hidden sizes differ")
    _refused(_cfg(teacher.path, sst2_dir, student=str(wide), attention_loss=True), tmp_path, ConfigError,
             "head counts differ")
    chars = bare_student(tmp_path / "chars", char_tokenizer(tmp_path / "tok"))
    _refused(_cfg(teacher.path, sst2_dir, student=str(chars), hidden_loss=True), tmp_path, ConfigError,
             "tokenize the text differently")
    deep = bare_student(tmp_path / "deep", num_hidden_layers=5)
    _refused(_cfg(teacher.path, sst2_dir, student=str(deep), hidden_loss=True), tmp_path, ConfigError,
             "more layers")


def test_killed_run_resumes_from_its_checkpoints(teacher, sst2_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 11:
                raise KeyboardInterrupt

    out, cfg = tmp_path / "out", _cfg(teacher.path, sst2_dir, student_layers=2)
    monkeypatch.setattr(ft, "LossThroughputCallback", Crash)
    with pytest.raises(KeyboardInterrupt):
        dl.distill(cfg, out)
    assert not out.exists() and (ft.checkpoint_dir(out) / "checkpoint-8").is_dir()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="alpha"):
        dl.distill(cfg.model_copy(update={"alpha": 0.9}), out, resume=True)
    art = dl.distill(cfg, out, resume=True)
    assert art.manifest["training"]["resumed"] is True and not ft.checkpoint_dir(out).exists()


def test_a_pipeline_step_takes_the_previous_artifact_as_teacher(teacher, sst2_dir, tmp_path):
    from deploylm.stages import get_stage

    stage = get_stage("distill")
    cfg = DistillConfig(data=str(sst2_dir), student_layers=1, epochs=1, batch_size=16, max_length=32)
    art = stage.handler(teacher, cfg, tmp_path / "out", False)
    assert art.manifest["config"]["teacher"] == str(teacher.path) and art.manifest["parent"]["hash"] == teacher.hash
    assert art.manifest["distillation"]["layers_kept"] == [3]


# --- the layer losses against hand-computed values ----------------------------------------------------------------

def test_hidden_mse_compares_mapped_layers_on_real_tokens_only():
    from deploylm.compress.kd import hidden_mse

    emb = torch.zeros(1, 2, 2)
    student = (emb, torch.tensor([[[1.0, 1.0], [9.0, 9.0]]]))  # second token is padding: its 9s must not count
    teacher = (emb, torch.zeros(1, 2, 2), torch.tensor([[[0.0, 3.0], [0.0, 0.0]]]))
    mask = torch.tensor([[1, 0]])
    # student layer 0 against teacher layer 1: ((1-0)² + (1-3)²) / 2 values = 2.5
    assert hidden_mse(student, teacher, [1], mask).item() == pytest.approx(2.5)


def test_attention_kl_is_the_teacher_to_student_kl_per_real_query():
    import math

    from deploylm.compress.kd import attention_kl

    s = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])  # [batch, heads, query, key]; query 1 is padding
    t = torch.tensor([[[[0.8, 0.2], [0.1, 0.9]]]])
    want = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert attention_kl((s,), (t,), [0], torch.tensor([[1, 0]])).item() == pytest.approx(want, rel=1e-5)
    assert attention_kl((t,), (t,), [0], torch.tensor([[1, 1]])).item() == pytest.approx(0.0, abs=1e-7)
