"""Export a transformers-format artifact to ONNX (dynamic batch and sequence axes), optionally fuse
it, check parity against the parent, gate it, and write an ONNX artifact."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..artifacts import Artifact
from ..errors import ConfigError
from .common import SUPPORTED_ARCHS, check_supported, copy_aux_files
from .first_token import FIRST_TOKEN, applies, first_token_last_layer

OPSET = 17
FORMATS = ("onnx",)


def _kwargs_wrapper(model, names, output_names):
    """torch.onnx.export (dynamo=False) passes positional tensors; transformers-5 BERT's forward wants
    keywords (its positional order is not input_ids, attention_mask, token_type_ids). It returns the task's
    outputs as a tuple in output_names' order, the order the export names them in."""
    import torch

    class KwargsWrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            out = self.model(**dict(zip(names, tensors)))
            return tuple(getattr(out, n) for n in output_names)

    return KwargsWrapper().eval()


def output_axes(task) -> dict[str, dict[int, str]]:
    """Dynamic axes of each exported output: batch for a row per input, batch and sequence for a row per token."""
    return {n: {0: "batch", 1: "sequence"} if n in task.token_level_outputs else {0: "batch"}
            for n in task.output_names}


def graph_rewrites(parent: Artifact, cfg: dict, all_tokens_last_layer: bool) -> list[str]:
    """The exact rewrites the export applies to this parent (recorded in the manifest as `rewrites`)."""
    return [] if all_tokens_last_layer or not applies(parent.task, cfg) else [FIRST_TOKEN]


def export_to_file(parent: Artifact, path: Path, rewrites: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """Write parent's model as ONNX to path; return the graph's input names."""
    import torch

    from ..runtime.torch_runner import model_input_names
    from ..tasks import task_for

    # Eager attention: with SDPA the exported graph has no pattern ORT's Attention fusion recognises.
    task = task_for(parent)
    model = task.load_model(str(parent.path), attn_implementation="eager").eval()  # fp32: load_model
    names = model_input_names(model)
    if FIRST_TOKEN in rewrites:
        first_token_last_layer(model)
    dummy = tuple(torch.ones((2, 16), dtype=torch.long) for _ in names)
    with torch.inference_mode():
        torch.onnx.export(_kwargs_wrapper(model, names, task.output_names), dummy, str(path), input_names=list(names),
                          output_names=list(task.output_names), opset_version=OPSET, do_constant_folding=True,
                          dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, **output_axes(task)})
    return names


def build_onnx_files(parent: Artifact, dest: Path, optimize: str | None, cfg: dict,
                     all_tokens_last_layer: bool = False) -> dict:
    """model.onnx (+ fused) and the tokenizer/config files into dest; returns what was done."""
    from .fuse import fuse_onnx

    rewrites = graph_rewrites(parent, cfg, all_tokens_last_layer)
    done: dict = {"opset": OPSET, "optimize": optimize, "rewrites": rewrites}
    with tempfile.TemporaryDirectory(prefix="deploylm-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        export_to_file(parent, raw, rewrites)
        if optimize:
            done["fused_ops"] = fuse_onnx(raw, dest / "model.onnx", optimize, SUPPORTED_ARCHS[cfg["model_type"]],
                                          cfg["num_attention_heads"], cfg["hidden_size"])
            from ..compress.pruned_model import fix_fused_heads  # a pruned parent's per-layer head counts

            fix_fused_heads(parent.path, dest / "model.onnx")
        else:
            shutil.move(str(raw), dest / "model.onnx")
    copy_aux_files(parent.path, dest)
    return done


def export(artifact: str | Path | Artifact, output: str | Path, fmt: str = "onnx", optimize: str | None = None,
           gate=None, parity_tolerance: float | None = None, all_tokens_last_layer: bool = False,
           overwrite: bool = False) -> Artifact:
    """deploylm export: ONNX (+ fusion) of a transformers artifact, parity-checked and gated.

    A classifier's last layer is exported for the first token only (first_token.py: exact, fewer
    FLOPs) unless all_tokens_last_layer."""
    from .fuse import check_level
    from .gate import GateOptions, build_gated_variant

    parent = artifact if isinstance(artifact, Artifact) else Artifact.open(artifact)
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'. Supported formats: {', '.join(FORMATS)}.")
    if parent.format != "transformers":
        raise ConfigError(f"Artifact {parent.path} is already '{parent.format}'; export takes a transformers-format "
                          "artifact (e.g. the output of deploylm finetune).")
    cfg = check_supported(parent)
    optimize = check_level(optimize) if optimize else None
    method = "onnx-O3" if optimize == "O3" else "onnx"
    from .stages import ExportConfig, gate_fields, recorded_config

    config = recorded_config(ExportConfig, format=fmt, optimize=optimize, parity_tolerance=parity_tolerance,
                             all_tokens_last_layer=all_tokens_last_layer, **gate_fields(gate))
    config["optimize"] = optimize  # None (no fusion) is a choice here, not "the default"
    return build_gated_variant(
        parent, output,
        lambda dest: {**build_onnx_files(parent, dest, optimize, cfg, all_tokens_last_layer), "opset": OPSET},
        stage="export", fmt="onnx",
        method=method, config=config, gate=gate or GateOptions(), parity_tolerance=parity_tolerance,
        overwrite=overwrite)
