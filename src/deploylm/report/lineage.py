"""Lineage labels from manifests alone: `finetune(minilm-l6) → distill(3L) → prune(heads .3, ffn .4) →
dynamic-int8`. Each step is named from its manifest's stage and config (the manifest contract of the stages);
nothing is inferred from a directory name."""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import MANIFEST

ARROW = " → "


def _fraction(x) -> str:
    """0.3 -> '.3', 0.45 -> '.45', 1 -> '1': short enough for a plot label."""
    text = f"{float(x):g}"
    return text[1:] if text.startswith("0.") else text


def _model_name(model) -> str | None:
    # an alias stays as it is; a path is named by its last folder
    return Path(str(model)).name if model else None


def _finetune(manifest: dict, cfg: dict) -> str:
    model = _model_name(cfg.get("model") or (manifest.get("parent") or {}).get("model"))
    return f"finetune({model})" if model else "finetune"


def _distill(manifest: dict, cfg: dict) -> str:
    if cfg.get("student_layers"):
        return f"distill({int(cfg['student_layers'])}L)"
    student = _model_name(cfg.get("student"))
    return f"distill({student})" if student else "distill"


def _prune(manifest: dict, cfg: dict) -> str:
    parts = [f"{name} {_fraction(cfg[name])}" for name in ("heads", "ffn") if cfg.get(name)]
    if cfg.get("layers"):
        parts.append(f"layers {int(cfg['layers'])}")
    if cfg.get("unstructured"):
        parts.append(f"unstructured {_fraction(cfg['unstructured'])}")
    return f"prune({', '.join(parts)})" if parts else "prune"


def _method(manifest: dict, cfg: dict) -> str:
    method = cfg.get("method") or manifest.get("method") or manifest.get("stage", "?")
    # export's fusion level is part of what it did (onnx vs onnx(O2) run at different speeds)
    if manifest.get("stage") == "export" and cfg.get("optimize") and "-O" not in method:
        return f"{method}({cfg['optimize']})"
    return method


_LABELS = {"finetune": _finetune, "distill": _distill, "prune": _prune, "quantize": _method, "export": _method}


def stage_label(manifest: dict) -> str:
    """One step's label from its manifest; a stage without a rule is shown by its name."""
    stage = manifest.get("stage", "?")
    rule = _LABELS.get(stage)
    return rule(manifest, manifest.get("config") or {}) if rule else stage


def _read(path: Path) -> dict | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def lineage(path: str | Path, manifest: dict | None = None) -> list[dict]:
    """The chain from the oldest known ancestor to this artifact: [{"label", "stage", "path", "missing"}].
    A parent whose directory (or manifest) is gone ends the chain with its recorded stage; a parent without a
    stage is the base model a finetune started from, named in the finetune's label instead."""
    path = Path(path)
    manifest = manifest if manifest is not None else _read(path)
    steps = [{"label": stage_label(manifest), "stage": manifest.get("stage", "?"), "path": str(path),
              "missing": False}]
    seen = {str(path.resolve())}
    parent = manifest.get("parent")
    while parent and parent.get("path") and parent["path"] not in seen:
        seen.add(parent["path"])
        found = _read(Path(parent["path"]))
        if found is None:
            if parent.get("stage"):
                steps.append({"label": parent["stage"], "stage": parent["stage"], "path": parent["path"],
                              "missing": True})
            break
        steps.append({"label": stage_label(found), "stage": found.get("stage", "?"), "path": parent["path"],
                      "missing": False})
        parent = found.get("parent")
    return steps[::-1]


def lineage_label(steps: list[dict]) -> str:
    return ARROW.join(s["label"] for s in steps)
