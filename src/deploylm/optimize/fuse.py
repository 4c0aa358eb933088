"""Graph fusion through onnxruntime's transformer optimiser (what Optimum's ORTOptimizer wraps).

Levels (user-facing, named like Optimum's):
  O1  basic graph clean-up baked in offline (constant folding, redundant nodes); no fusions.
  O2  O1 + transformer fusions: Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization.
      Exact up to float reassociation. The recommended level, and the base for int8.
  O3  O2 + GELU approximation (FastGelu, tanh form): a little faster, moves logits by ~1e-3.
The fused graph stays portable ONNX + com.microsoft ops (python fusions at opt_level 0); the CPU
specific layout work is left to the session (ORT_ENABLE_ALL) on the machine that runs it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, ModelError

LEVELS = ("O1", "O2", "O3")


def check_level(level: str) -> str:
    up = str(level).upper()
    if up not in LEVELS:
        raise ConfigError(f"Unknown optimisation level '{level}'. Valid levels: {', '.join(LEVELS)} "
                          "(O1 clean-up, O2 transformer fusions, O3 O2 + GELU approximation).")
    return up


def fuse_onnx(src: Path, dst: Path, level: str, model_type: str, num_heads: int, hidden_size: int) -> dict:
    """Write the optimised graph of src to dst; return the fused-operator counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    level = check_level(level)
    if level == "O1":
        model = optimize_model(str(src), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=1, only_onnxruntime=True, use_gpu=False)
    else:
        options = FusionOptions(model_type)
        options.enable_gelu_approximation = level == "O3"
        model = optimize_model(str(src), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, optimization_options=options, use_gpu=False)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    if level != "O1" and not stats.get("Attention", 0) and not stats.get("MultiHeadAttention", 0):
        # Fusion silently does nothing on SDPA exports; say so instead of shipping an unfused "O2".
        raise ModelError(f"onnxruntime fused no attention in {src} (fused ops: {stats or 'none'}). The model must be "
                         "exported with eager attention; re-export it with deploylm export.")
    model.save_model_to_file(str(dst))
    return stats
