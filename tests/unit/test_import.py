"""`deploylm import` on tiny random decoders (Llama, Qwen2, Gemma3), its errors, the decoder aliases, and the
chat / completion prompt side of the text-generation task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deploylm.artifacts import Artifact
from deploylm.errors import ArtifactError, ConfigError, ModelError, ParityError, RequestError
from deploylm.models import importer, known_models, resolve_model
from deploylm.models.importer import import_decoder
from deploylm.tasks import get_task
from deploylm.tasks.generation import (build_chat_prompt, encode_completion_prompt, has_chat_template,
                                       require_chat_template)
from tiny_decoders import CHATML, make_tiny_decoder, tiny_tokenizer

CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
TEXTS = ["Paris is the capital of France.", "数据科学很有趣。", "emoji 🎉🚀 done"]


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-decoders")
    made = {arch: make_tiny_decoder(arch, root / arch) for arch in CLASSES}
    made["base"] = make_tiny_decoder("gemma3", root / "base", chat_template=False)
    return made


@pytest.mark.parametrize("arch", list(CLASSES))
def test_import_writes_an_artifact_plain_transformers_loads(tiny_src, tmp_path, arch):
    art = import_decoder(str(tiny_src[arch]), tmp_path / "art")
    m = art.manifest
    assert (m["stage"], m["task"], m["format"], m["labels"]) == ("import", "text-generation", "transformers", [])
    assert art.max_length == 256  # the tiny configs' max_position_embeddings, under the 8192 cap
    dec = m["decoder"]
    assert dec["architecture"] == CLASSES[arch] and dec["chat_template"] is True
    source_tok = AutoTokenizer.from_pretrained(tiny_src[arch])
    assert dec["eos_token_ids"] == [source_tok.convert_tokens_to_ids("<|im_end|>")]
    assert dec["gguf"] is None and m["parent"]["kind"] == "local"
    Artifact.open(art.path)  # every file matches its recorded sha256

    saved = AutoModelForCausalLM.from_pretrained(art.path)
    source = AutoModelForCausalLM.from_pretrained(tiny_src[arch])
    assert type(saved).__name__ == CLASSES[arch] and saved.dtype == torch.float32
    ids = torch.tensor([source_tok("Hello 你好 🎉")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(saved(ids).logits, source(ids).logits)
    saved_tok = AutoTokenizer.from_pretrained(art.path)
    assert [saved_tok(t)["input_ids"] for t in TEXTS] == [source_tok(t)["input_ids"] for t in TEXTS]
    assert saved_tok.chat_template == CHATML
    gen = json.loads((art.path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == dec["eos_token_ids"][0]


def test_max_context_caps_the_recorded_length(tiny_src, tmp_path):
    art = import_decoder(str(tiny_src["llama"]), tmp_path / "art", max_context=64)
    assert art.max_length == 64
    assert (art.manifest["decoder"]["context_length"], art.manifest["decoder"]["max_context"]) == (256, 64)
    assert art.manifest["config"]["max_context"] == 64
    with pytest.raises(ConfigError, match="max-context"):
        import_decoder(str(tiny_src["llama"]), tmp_path / "art2", max_context=0)


def test_base_model_without_template_and_with_a_template_file(tiny_src, tmp_path):
    base = import_decoder(str(tiny_src["base"]), tmp_path / "base")
    assert base.manifest["decoder"]["chat_template"] is False
    assert not has_chat_template(AutoTokenizer.from_pretrained(base.path))

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    chat = import_decoder(str(tiny_src["base"]), tmp_path / "chat", chat_template=template)
    assert (chat.manifest["decoder"]["chat_template"], chat.manifest["decoder"]["chat_template_source"]) == (True, "file")
    tok = AutoTokenizer.from_pretrained(chat.path)
    ids = build_chat_prompt(tok, [{"role": "user", "content": "hi"}])
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_bad_template_files_are_config_errors(tiny_src, tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(ConfigError, match="does not render"):
        import_decoder(str(tiny_src["base"]), tmp_path / "a", chat_template=broken)
    with pytest.raises(ConfigError, match="does not exist"):
        import_decoder(str(tiny_src["base"]), tmp_path / "b", chat_template=tmp_path / "missing.jinja")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_logit_mismatch_is_a_parity_error_and_leaves_nothing(tiny_src, tmp_path, monkeypatch):
    real_copy = importer.plain_copy

    def damaged(model):
        plain = real_copy(model)
        with torch.no_grad():
            next(p for n, p in plain.named_parameters() if "mlp" in n).add_(0.1)
        return plain

    monkeypatch.setattr(importer, "plain_copy", damaged)
    with pytest.raises(ParityError, match="logits differ"):
        import_decoder(str(tiny_src["qwen2"]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary sibling


def test_tokenizer_mismatch_is_a_parity_error():
    with pytest.raises(ParityError, match="tokenizer does not match"):
        importer._check_tokenizer(tiny_tokenizer(vocab_size=400), tiny_tokenizer(vocab_size=300))


def test_input_errors_name_the_problem_and_the_alternatives(tiny_src, tiny_cls, tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="neither a known alias.*smollm2-135m, gemma3-270m, or a .gguf file"):
        import_decoder("./no/such/model", tmp_path / "o")
    with pytest.raises(ModelError, match="does not exist"):
        import_decoder(str(tmp_path / "missing.gguf"), tmp_path / "o")
    (tmp_path / "junk.gguf").write_bytes(b"definitely not gguf")
    with pytest.raises(ModelError, match="could not read the GGUF file"):
        import_decoder(str(tmp_path / "junk.gguf"), tmp_path / "o")
    with pytest.raises(ModelError, match="not a GPT-style decoder.*BertForSequenceClassification"):
        import_decoder(str(tiny_cls.path), tmp_path / "o")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="Hub is offline.*smollm2-135m"):
        import_decoder("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "o")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        import_decoder(str(tiny_src["llama"]), tmp_path / "taken")
    assert not (tmp_path / "o").exists() and list((tmp_path / "taken").iterdir()) == []


def test_overwrite_replaces_an_existing_artifact(tiny_src, tmp_path):
    import_decoder(str(tiny_src["llama"]), tmp_path / "art")
    art = import_decoder(str(tiny_src["qwen2"]), tmp_path / "art", overwrite=True)
    assert Artifact.open(tmp_path / "art").manifest["decoder"]["architecture"] == "Qwen2ForCausalLM" == \
        art.manifest["decoder"]["architecture"]


def test_cli_import_command(tiny_src, tmp_path):
    import typer
    from typer.testing import CliRunner

    from deploylm.models.cli import register

    app = typer.Typer()
    app.callback()(lambda: None)  # keep `import` a named subcommand
    register(app)
    result = CliRunner().invoke(app, ["import", str(tiny_src["gemma3"]), "--output", str(tmp_path / "art"),
                                      "--max-context", "128"])
    assert result.exit_code == 0, result.output
    assert "Gemma3ForCausalLM" in result.output
    assert Artifact.open(tmp_path / "art").max_length == 128


# --- aliases ---------------------------------------------------------------------------------

def test_decoder_aliases_are_listed_and_refused_where_gguf_is_not_read():
    rows = {r["alias"]: r for r in known_models()}
    assert rows["smollm2-135m"]["kind"] == rows["gemma3-270m"]["kind"] == "decoder"
    assert rows["minilm-l6"]["kind"] == "encoder"
    with pytest.raises(ModelError, match="deploylm import smollm2-135m"):
        resolve_model("smollm2-135m")


def test_smollm2_alias_resolves_to_the_packaged_gguf():
    src = resolve_model("smollm2-135m", decoders=True)
    assert src.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.gguf_path.is_file()


def test_assembled_gemma_is_found_only_with_a_matching_stamp(tmp_path, monkeypatch):
    from deploylm.models import registry

    monkeypatch.setenv("DEPLOYLM_MODELS_DIR", str(tmp_path))
    target, stamp = registry._gemma_target()
    assert target.parent == tmp_path / "gemma3-270m" and registry._gemma_gguf() is None
    target.parent.mkdir()
    target.write_bytes(b"x" * 100)
    stamp.write_text(f"{'a' * 64} 100\n")
    assert registry._gemma_gguf() == target
    target.write_bytes(b"x" * 99)  # truncated since it was verified
    assert registry._gemma_gguf() is None


# --- prompts ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_tok():
    return tiny_tokenizer(chat_template=True)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_chat_prompt_renders_the_template(chat_tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 你好 🎉"}]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 你好 🎉<|im_end|>\n<|im_start|>assistant\n"
    assert build_chat_prompt(chat_tok, msgs) == _ids(chat_tok, expected)
    assert build_chat_prompt(chat_tok, msgs, add_generation_prompt=False) == _ids(chat_tok, expected[:-len("<|im_start|>assistant\n")])
    developer = [{"role": "developer", "content": "Be brief."}, msgs[1]]
    assert build_chat_prompt(chat_tok, developer) == _ids(chat_tok, expected)
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert build_chat_prompt(chat_tok, parts) == _ids(chat_tok, "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("messages, where", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "user", "content": "x"}, {"role": "robot", "content": "x"}], r"messages\[1\]\.role 'robot'"),
    ([{"content": "x"}], r"messages\[0\]\.role None"),
    ([{"role": "user"}], r"messages\[0\]\.content is missing"),
    ([{"role": "user", "content": 5}], r"messages\[0\]\.content must be"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], r"messages\[0\]\.content\[0\].*'image_url'"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], r"messages\[0\]\.content\[0\]\.text"),
    (["hi"], r"messages\[0\] must be an object"),
])
def test_bad_messages_are_400s_naming_the_field(chat_tok, messages, where):
    with pytest.raises(RequestError, match=where) as info:
        build_chat_prompt(chat_tok, messages)
    assert info.value.status == 400


def test_chat_without_template_is_a_clear_error():
    base = tiny_tokenizer(chat_template=False)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(RequestError, match="gemma3-270m is a base model without a chat template.*/v1/completions"):
        build_chat_prompt(base, msgs, model_name="gemma3-270m")
    with pytest.raises(ConfigError, match="--chat-template FILE"):
        require_chat_template(base, "gemma3-270m")
    assert build_chat_prompt(base, msgs, chat_template=CHATML) == _ids(base, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_template_that_rejects_messages_is_a_400(chat_tok):
    strict = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}x"
    with pytest.raises(RequestError, match="no system role"):
        build_chat_prompt(chat_tok, [{"role": "system", "content": "s"}], chat_template=strict)


def test_completion_prompt_text_or_ids(chat_tok):
    assert encode_completion_prompt(chat_tok, "数据 🎉") == chat_tok("数据 🎉")["input_ids"]
    assert encode_completion_prompt(chat_tok, [5, 7, 9]) == [5, 7, 9]
    for bad, match in (([5, len(chat_tok)], r"prompt\[1\]"), ([-1], r"prompt\[0\]"), ([True], "string or a list"),
                       (["a"], "string or a list"), (3, "string or a list"), ("", "empty"), ([], "empty")):
        with pytest.raises(RequestError, match=match):
            encode_completion_prompt(chat_tok, bad)


def test_generation_task_is_registered():
    task = get_task("text-generation")
    assert (task.name, task.primary_metric, task.auto_model) == ("text-generation", "perplexity", "AutoModelForCausalLM")
