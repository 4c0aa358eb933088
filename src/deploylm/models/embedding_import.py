"""`deploylm import MODEL --task feature-extraction`: an encoder (packaged alias, HF directory or Hub id) becomes a
sentence-embedding artifact without training: the encoder's weights (no head) and tokenizer, manifest task
`feature-extraction`. As for decoders, the written directory is reloaded before it is renamed into place and
must embed like the source (ParityError if not).

torch and transformers are imported inside functions: the CLI imports this module when it starts."""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import Artifact, check_output, create_artifact
from ..errors import ConfigError, ModelError, ParityError
from .registry import ALIASES, ModelSource, hub_error, resolve_model

TASK = "feature-extraction"
DEFAULT_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length; a model's sentence_bert_config.json wins
# Identical weights through the same classes: only a different kernel choice after reload may differ.
EMBEDDING_TOLERANCE = 1e-5
PARITY_TEXTS = ("A man is playing a guitar.", "The quick brown fox jumps over the lazy dog.", "short")


def refuse_decoder_spec(spec: str) -> None:
    """Decoder aliases and GGUF files are refused by name alone, before anything is resolved or loaded."""
    alias = ALIASES.get(spec)
    if (alias is not None and alias.kind == "decoder") or spec.lower().endswith(".gguf"):
        raise ConfigError(f"--task {TASK} takes an encoder (minilm-l6, mpnet-base, or a Hugging Face encoder "
                          f"directory); {spec} is a GPT-style decoder. Import it without --task (a text-generation "
                          "artifact).")


def import_embedder(spec: str, output: Path, *, overwrite: bool = False, max_length: int | None = None) -> Artifact:
    """Import `spec` as a feature-extraction (sentence embedding) artifact."""
    refuse_decoder_spec(spec)
    output = check_output(output, overwrite)
    source = resolve_model(spec)
    config = _encoder_config(source)
    _check_mean_pooling(source)
    length = max_length or _default_max_length(source, config)
    if length < 1:
        raise ConfigError(f"--max-length must be a positive number of tokens; got {length}.")
    tokenizer, model = _load(source)
    reference = _embed(model, tokenizer, length)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info["parity"] = _check_saved(tmp, length, reference)

    info = {"dimensions": int(reference.shape[1]), "pooling": "mean", "normalize": "l2",
            "architecture": type(model.backbone).__name__}
    return create_artifact(output, write, stage="import", config={"model": spec, "task": TASK, "max_length": length},
                           parent=source.as_parent(), task=TASK, labels=[], max_length=length,
                           extra={"embedding": info}, overwrite=overwrite)


def _encoder_config(source: ModelSource):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.location)
    except OSError as exc:
        if source.is_local:
            raise ModelError(f"Could not read the model config in {source.location}: {exc}") from None
        raise hub_error(source, exc) from None
    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False) or any(a.endswith("ForCausalLM") for a in archs):
        raise ConfigError(f"--task {TASK} takes an encoder; {source.spec} is {', '.join(archs) or config.model_type}. "
                          "Import a decoder without --task.")
    return config


def _check_mean_pooling(source: ModelSource) -> None:
    """A sentence-transformers directory says how it pools; deploylm computes mean pooling only, and must not
    silently serve a CLS-pooled model's embeddings as mean-pooled ones."""
    path = Path(source.location) / "1_Pooling" / "config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ConfigError(f"{source.spec} pools with {modes or 'no mode'} ({path}); deploylm's {TASK} computes mean "
                          "pooling only, so its embeddings would differ from the model's own.")


def _default_max_length(source: ModelSource, config) -> int:
    st = Path(source.location) / "sentence_bert_config.json"
    if st.is_file():
        found = json.loads(st.read_text()).get("max_seq_length")
        if isinstance(found, int) and found > 0:
            return found
    return min(DEFAULT_MAX_LENGTH, getattr(config, "max_position_embeddings", DEFAULT_MAX_LENGTH))


def _load(source: ModelSource):
    from transformers import AutoTokenizer

    from ..tasks import get_task

    try:
        return AutoTokenizer.from_pretrained(source.location), get_task(TASK).load_model(source.location)
    except OSError as exc:
        if not source.is_local:
            raise hub_error(source, exc) from None
        raise ModelError(f"Could not load an encoder from {source.spec}: {exc}") from None


def _embed(model, tokenizer, max_length: int):
    import torch

    batch = tokenizer(list(PARITY_TEXTS), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).sentence_embedding


def _check_saved(tmp: Path, max_length: int, reference) -> dict:
    """Reload the written directory (tokenizer and model) through the task, as every runner will."""
    from transformers import AutoTokenizer

    from ..tasks import get_task

    emb = _embed(get_task(TASK).load_model(str(tmp)), AutoTokenizer.from_pretrained(tmp), max_length)
    diff = float((emb - reference).abs().max()) if emb.shape == reference.shape else float("inf")
    if not diff <= EMBEDDING_TOLERANCE:
        raise ParityError(f"The saved model's embeddings differ from the source's by up to {diff:.3g} (allowed "
                          f"{EMBEDDING_TOLERANCE}); nothing was written. Report this with the source model.")
    return {"texts": len(PARITY_TEXTS), "max_abs_diff": diff, "tolerance": EMBEDDING_TOLERANCE}
