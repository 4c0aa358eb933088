"""Unstructured magnitude pruning: the smallest-magnitude weights of the encoder's Linear layers set to zero,
ranked globally across them (Han et al. 2015; Gordon et al. 2020 for BERT).

Honest about what it buys: the zeros stay in dense tensors, and dense kernels (PyTorch, onnxruntime's MatMul and
its int8 MatMulInteger) do exactly the same work with them, so nothing gets faster and the files are as large.
What does change is how well the weights compress: `compressed_size` measures the weight file deflated (zip's
DEFLATE through zlib; zstandard is not installed here), before and after, for the manifest.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from .shrink import encoder_layers

COMPRESSION = "zip deflate (zlib level 6)"


def encoder_linears(model) -> list:
    """(name, Linear) of every Linear inside the encoder layers: attention Q/K/V/output and the FFN. The
    embeddings, pooler and task head are left dense (small, and the head is what the metric reads)."""
    import torch

    out = []
    for i, layer in enumerate(encoder_layers(model)):
        out += [(f"layer.{i}.{n}", m) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    return out


def magnitude_prune(model, fraction: float) -> dict:
    """Zero the `fraction` smallest |w| of all encoder Linear weights (biases stay); returns what was done."""
    import torch

    linears = encoder_linears(model)
    flat = torch.cat([m.weight.detach().abs().flatten() for _, m in linears])
    k = int(round(fraction * flat.numel()))
    if k == 0:
        return {"weights": flat.numel(), "zeroed": 0, "threshold": 0.0}
    # the k-th smallest magnitude; ties at the threshold (measure zero for trained weights) all go
    threshold = float(torch.kthvalue(flat, k).values)
    zeroed = 0
    per_module = {}
    with torch.no_grad():
        for name, m in linears:
            keep = m.weight.abs() > threshold
            m.weight.mul_(keep)
            gone = int((~keep).sum())
            zeroed += gone
            per_module[name] = round(gone / keep.numel(), 4)
    return {"weights": flat.numel(), "zeroed": zeroed, "sparsity": round(zeroed / flat.numel(), 6),
            "threshold": threshold, "sparsity_per_module": per_module}


def compressed_size(path: Path) -> dict:
    """Bytes of the file and of its DEFLATE-compressed form."""
    data = Path(path).read_bytes()
    return {"bytes": len(data), "compressed_bytes": len(zlib.compress(data, 6)), "compression": COMPRESSION}


def sparsity(model) -> float:
    linears = encoder_linears(model)
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    return zeros / sum(m.weight.numel() for _, m in linears)
