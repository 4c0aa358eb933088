"""`deploylm import`: a GPT-style decoder (packaged GGUF alias, PATH.gguf, HF directory or Hub id) becomes a
normal deploylm artifact: fp32 safetensors, tokenizer with its chat template, generation_config.json and a
manifest, which plain transformers loads without `gguf`. Before the artifact is renamed into place the saved
model is reloaded and must give the source's logits and the source tokenizer's encodings (ParityError if not).

torch and transformers are imported inside functions: the CLI imports this module when it starts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, check_output, create_artifact
from ..errors import BackendUnavailableError, ConfigError, ModelError, ParityError
from .registry import ModelSource, hub_error, resolve_model

DEFAULT_MAX_CONTEXT = 8192
# Identical weights through the same model class: the logits should match bit for bit; the bound only
# leaves room for a different kernel choice after reload, far below any change a wrong weight makes.
LOGIT_TOLERANCE = 1e-5
PARITY_PROMPT = "The capital of France is Paris. 数据科学很有趣 🎉 and"
TOKENIZER_TEXTS = (
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs and\nnew lines  ",
    "数据科学很有趣。你好，世界！",
    "emoji: 🎉🚀👍🏽 and a family 👨‍👩‍👧",
    "mixed: café naïve – “quotes” 1234567890",
)
SAMPLE_CHAT = [
    {"role": "user", "content": "Hi! 你好 🎉"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is 2 + 2?"},
]
# End-of-turn markers of common chat formats: when the chat template emits one and it is a single token,
# generation must stop at it as it does at EOS (ChatML, Gemma, Llama 3, Phi).
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


def import_decoder(spec: str, output: Path, *, overwrite: bool = False, chat_template: Path | None = None,
                   max_context: int | None = None) -> Artifact:
    """Import `spec` (smollm2-135m | gemma3-270m | PATH.gguf | HF_DIR | HUB_ID) as a text-generation artifact."""
    output = check_output(output, overwrite)  # before minutes of loading, not after
    cap = DEFAULT_MAX_CONTEXT if max_context is None else max_context
    if cap < 1:
        raise ConfigError(f"--max-context must be a positive number of tokens; got {cap}.")
    template_text = read_chat_template(chat_template) if chat_template is not None else None
    source = resolve_model(spec, decoders=True)
    parent = source.as_parent()
    if source.gguf_file is None:
        check_is_decoder(source)
    tokenizer, model = load_source(source)
    template_source = _attach_chat_template(tokenizer, template_text, chat_template, source)
    info = decoder_info(source, parent, model, tokenizer, cap, template_source)
    tokenizer.model_max_length = info["max_context"]
    generation_config = _generation_config(model, tokenizer, info["eos_token_ids"])
    prompt_ids = tokenizer(PARITY_PROMPT)["input_ids"]
    reference = _logits(model, prompt_ids)
    plain = plain_copy(model)
    del model  # keep two fp32 copies in memory at most (the plain one and the reloaded one)
    plain.generation_config = generation_config

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # create_artifact writes the manifest after this returns: the figures land in it through `info`
        info["parity"] = check_saved(tmp, tokenizer, prompt_ids, reference)

    config = {"model": spec, "chat_template": str(chat_template) if chat_template else None, "max_context": cap}
    return create_artifact(output, write, stage="import", config=config, parent=parent, task="text-generation",
                           labels=[], max_length=info["max_context"], extra={"decoder": info}, overwrite=overwrite)


def read_chat_template(path: Path) -> str:
    """A Jinja chat template file, or a JSON file holding one under "chat_template" (a tokenizer_config.json)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--chat-template {path} does not exist. Pass a Jinja template file.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            text = json.loads(text)["chat_template"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"--chat-template {path} is JSON but has no \"chat_template\" string. "
                              "Pass a Jinja template file or a tokenizer_config.json that has one.") from None
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--chat-template {path} holds no template. Pass a Jinja template file.")
    return text


def check_is_decoder(source: ModelSource) -> None:
    """Refuse encoders and seq2seq models from their config alone, before any weights load."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source.location)
    except OSError as exc:
        if source.is_local:
            raise ModelError(f"Could not read the model config in {source.location}: {exc}") from None
        raise hub_error(source, exc, decoders=True) from None
    except ValueError as exc:  # unknown model_type
        raise ModelError(f"transformers does not know the model in {source.location}: {str(exc).splitlines()[0]}") from None
    causal = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ((v,) if isinstance(v, str) else v)}
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        ok = any(a in causal or a.endswith("ForCausalLM") for a in archs)
    else:
        ok = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)
    if not ok:
        shown = ", ".join(archs) or config.model_type
        raise ModelError(f"{source.spec} is not a GPT-style decoder ({shown}); `deploylm import` takes causal language "
                         "models (…ForCausalLM). Encoders go straight to `deploylm finetune --model`.")


def load_source(source: ModelSource):
    """(tokenizer, fp32 model in eval mode), through the real from_pretrained path (GGUF dequantised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32, **kwargs)
    except ImportError as exc:
        raise BackendUnavailableError(f"Reading {source.spec} needs a package that is missing ({exc}). "
                                      "Install gguf and accelerate (make install does this).") from None
    except OSError as exc:
        if not source.is_local:
            raise hub_error(source, exc, decoders=True) from None
        raise ModelError(f"Could not load a causal language model from {source.spec}: {exc}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        what = "GGUF file" if source.gguf_file else "model"
        raise ModelError(f"transformers could not read the {what} {source.spec} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]}). Pass a GGUF of an architecture transformers supports "
                         "(llama, qwen2, gemma3, ...) or a Hugging Face causal-LM directory.") from None
    return tokenizer, model.eval()


def _attach_chat_template(tokenizer, template_text: str | None, path: Path | None, source: ModelSource) -> str | None:
    """Where the artifact's chat template comes from: "file" (--chat-template), "gguf", "tokenizer" or None."""
    if template_text is not None:
        tokenizer.chat_template = template_text
        try:
            tokenizer.apply_chat_template(SAMPLE_CHAT, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 syntax/runtime errors, raise_exception() in the template
            raise ConfigError(f"--chat-template {path} does not render a simple user/assistant conversation "
                              f"({type(exc).__name__}: {exc}). Fix the template.") from None
        return "file"
    if getattr(tokenizer, "chat_template", None):
        return "gguf" if source.gguf_file else "tokenizer"
    return None


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for value in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    for marker in END_OF_TURN_TOKENS:
        if marker in template:
            encoded = tokenizer.encode(marker, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
    return ids


def decoder_info(source: ModelSource, parent: dict, model, tokenizer, cap: int, template_source: str | None) -> dict:
    """manifest["decoder"]: what the engine and the server need to know without loading the model."""
    cfg = model.config
    native = getattr(cfg, "max_position_embeddings", None)
    gguf = {"file": str(source.gguf_path), "sha256": parent["hash"]} if source.gguf_path else None
    return {
        "architecture": type(model).__name__,
        "model_type": cfg.model_type,
        "params": sum(p.numel() for p in model.parameters()),  # parameters() counts tied weights once
        "vocab_size": int(cfg.vocab_size),
        "context_length": native,
        "max_context": min(native, cap) if native else cap,
        "max_context_cap": cap,
        "chat_template": template_source is not None,
        "chat_template_source": template_source,
        "gguf": gguf,
        "eos_token_ids": _eos_ids(model, tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _generation_config(model, tokenizer, eos_ids: list[int]):
    gen = copy.deepcopy(model.generation_config)
    gen.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None)
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    return gen


def plain_copy(model):
    """The same class with the same weights and no GGUF quantisation record: save_pretrained refuses a
    GGUF-loaded model, and a directory whose config names gguf would need it to load."""
    import torch

    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.architectures = [type(model).__name__]  # GGUF configs carry none
    cfg.dtype = torch.float32
    plain = type(model)(cfg)
    plain.load_state_dict(model.state_dict())
    return plain.eval()


def _logits(model, ids: list[int]):
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def check_saved(tmp: Path, tokenizer, prompt_ids: list[int], reference) -> dict[str, Any]:
    """Reload the written directory with plain transformers; it must encode and score like the source."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved_tok = AutoTokenizer.from_pretrained(tmp)
    _check_tokenizer(tokenizer, saved_tok)
    saved = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    logits = _logits(saved, prompt_ids)
    diff = float((logits - reference).abs().max())
    if not diff <= LOGIT_TOLERANCE:
        raise ParityError(f"The saved model's logits differ from the source's by up to {diff:.3g} on a "
                          f"{len(prompt_ids)}-token prompt (allowed {LOGIT_TOLERANCE}); the weights did not survive "
                          "the conversion, so nothing was written. Report this with the source model.")
    return {"prompt_tokens": len(prompt_ids), "max_abs_logit_diff": diff, "tolerance": LOGIT_TOLERANCE,
            "tokenizer_texts": len(TOKENIZER_TEXTS)}


def _check_tokenizer(source_tok, saved_tok) -> None:
    problems = []
    for text in TOKENIZER_TEXTS:
        for special in (True, False):
            a = source_tok(text, add_special_tokens=special)["input_ids"]
            b = saved_tok(text, add_special_tokens=special)["input_ids"]
            if a != b:
                problems.append(f"{text!r} (add_special_tokens={special}): {a[:12]} vs {b[:12]}")
        if source_tok.decode(source_tok.encode(text)) != saved_tok.decode(saved_tok.encode(text)):
            problems.append(f"{text!r} decodes differently")
    if bool(source_tok.chat_template) != bool(saved_tok.chat_template):
        problems.append("the chat template was lost")
    elif source_tok.chat_template:
        render = dict(tokenize=False, add_generation_prompt=True)
        if source_tok.apply_chat_template(SAMPLE_CHAT, **render) != saved_tok.apply_chat_template(SAMPLE_CHAT, **render):
            problems.append("the chat template renders differently")
    if problems:
        raise ParityError("The saved tokenizer does not match the source's: " + "; ".join(problems[:4]) +
                          ". Nothing was written. Report this with the source model.")
