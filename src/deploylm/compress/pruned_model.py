"""Loading a pruned model whose shapes config.json cannot express (heads removed, uneven FFN widths).

Choice: a loader inside deploylm, not ONNX only. transformers-5 BERT derives the head size from
hidden_size / num_attention_heads and has one intermediate_size, but its modules run any per-layer width (see
shrink.py), so the artifact stays a transformers directory (config.json with the *original* head count and FFN
width, model.safetensors with the shrunk tensors) plus `pruning.json` holding each layer's kept shapes. Every
place deploylm loads a model goes through Task.load_model, which calls `load_if_pruned` first: the torch runner,
bench, serve, the quantize/export gate and the ONNX export all take the artifact unchanged, and recovery
fine-tuning (and a later `finetune --model`) keeps working in PyTorch, which an ONNX-only artifact would not.
Plain `from_pretrained` on such a directory fails loudly (size mismatch), never silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArtifactError
from .shrink import LayerShape

SPEC_FILE = "pruning.json"
SPEC_VERSION = 1


def write_spec(directory: Path, shapes: list[LayerShape]) -> None:
    spec = {"version": SPEC_VERSION, "layers": [{"heads": s.heads, "ffn": s.ffn} for s in shapes]}
    (Path(directory) / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")


def read_spec(directory: Path) -> list[LayerShape] | None:
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
        if spec.get("version") != SPEC_VERSION:
            raise ValueError(f"version {spec.get('version')}, this deploylm reads {SPEC_VERSION}")
        return [LayerShape(int(l["heads"]), int(l["ffn"])) for l in spec["layers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a valid pruning spec ({exc}). Re-create the artifact with "
                            "deploylm prune.") from None


def load_if_pruned(auto, location: str, **kwargs):
    """The model at `location` rebuilt with its recorded shapes, or None when it has no pruning spec (a plain
    transformers directory, which from_pretrained loads). `kwargs` are from_pretrained's: dtype,
    attn_implementation, and new labels (num_labels, id2label, label2id, ignore_mismatched_sizes)."""
    shapes = read_spec(Path(location)) if Path(location).is_dir() else None
    if shapes is None:
        return None
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from .shrink import reshape_to

    dtype = kwargs.pop("dtype", torch.float32)
    ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
    attn = kwargs.pop("attn_implementation", None)
    config = AutoConfig.from_pretrained(location, **kwargs)
    model = auto.from_config(config, dtype=dtype, **({"attn_implementation": attn} if attn else {}))
    reshape_to(model, shapes)
    state = load_file(str(Path(location) / "model.safetensors"))
    own = model.state_dict()
    dropped = {k for k, v in state.items() if ignore_mismatched and k in own and own[k].shape != v.shape}
    # a new label set: the old head's tensors are dropped (the new head keeps its initialisation), as
    # from_pretrained(ignore_mismatched_sizes=True) does
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
    missing = [k for k in missing if k not in dropped]
    if unexpected or [k for k in missing if not _tied(model, k)]:
        raise ArtifactError(f"The weights in {location} do not fit its pruning spec (missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}). Re-create the artifact with deploylm prune.")
    return model.to(dtype).eval()


def _tied(model, key: str) -> bool:
    """Keys safetensors leaves out because they share storage with another (tied embeddings)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return key in tied or "position_ids" in key


def fix_fused_heads(parent_dir: Path, onnx_path: Path) -> list[int] | None:
    """Give each fused Attention node of an exported pruned model its own layer's head count.

    onnxruntime's fusion reads the head count from the graph's Reshape to (…, -1, head_size), finds -1 and falls
    back to the one num_heads it was given (config.json's, the unpruned count): right for every layer of a plain
    model, wrong for a layer that lost heads. A node's packed Q/K/V weight [hidden, 3 · heads · head_size] says how
    many heads its layer kept, and its scale is already 1/√head_size, so setting `num_heads` from that weight is
    all that is missing. Layers left unfused (a classifier's first-token last layer) need nothing. Returns the
    head counts set; None for a parent without a pruning spec."""
    if read_spec(Path(parent_dir)) is None:
        return None
    import onnx
    from onnx import numpy_helper

    cfg = json.loads((Path(parent_dir) / "config.json").read_text())
    size = cfg["hidden_size"] // cfg["num_attention_heads"]
    model = onnx.load(str(onnx_path))
    weights = {t.name: t for t in model.graph.initializer}
    counts = []
    for node in model.graph.node:
        if node.op_type != "Attention" or node.domain != "com.microsoft" or node.input[1] not in weights:
            continue
        sizes = next((list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
        q_width = sizes[0] if sizes else numpy_helper.to_array(weights[node.input[1]]).shape[1] // 3
        heads = int(q_width) // size
        for attr in node.attribute:
            if attr.name == "num_heads":
                attr.i = heads
        counts.append(heads)
    onnx.save(model, str(onnx_path))
    return counts
