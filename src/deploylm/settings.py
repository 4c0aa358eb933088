"""The one place environment variables are read."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path | None:
    """Where local copies of the datasets live: $DEPLOYLM_DATA_DIR, else ../shared/data next to the repo."""
    env = os.environ.get("DEPLOYLM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def hub_offline() -> bool:
    """True when the user told Hugging Face libraries not to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def num_threads() -> int:
    """Intra-op threads for torch/onnxruntime: $DEPLOYLM_THREADS, else every core we may use."""
    env = os.environ.get("DEPLOYLM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def mpnet_dir() -> Path | None:
    """Where the unpacked all-mpnet-base-v2 lives (made by `make models`): $DEPLOYLM_MPNET_DIR or .models/."""
    env = os.environ.get("DEPLOYLM_MPNET_DIR")
    path = Path(env) if env else _REPO_ROOT / ".models" / "all-mpnet-base-v2"
    return path if path.is_dir() else None


def peer_python() -> Path | None:
    """Python of the Optimum peer's own venv (benchmarks): $DEPLOYLM_PEER_PYTHON or benchmarks/.peer-venv."""
    env = os.environ.get("DEPLOYLM_PEER_PYTHON")
    path = Path(env) if env else _REPO_ROOT / "benchmarks" / ".peer-venv" / "bin" / "python"
    return path if path.is_file() else None


SPIN_POLICIES = ("always", "during-run", "never")


def spin_wait() -> str:
    """How math threads wait for work ($DEPLOYLM_SPIN_WAIT): "always" (default: busy-wait, best for offline
    batches), "during-run" (spin inside a call, sleep as soon as it returns: what a server uses, see
    use_serving_threads) or "never" (sleep at once; "0" is accepted for it too)."""
    value = os.environ.get("DEPLOYLM_SPIN_WAIT", "always").lower()
    value = {"1": "always", "true": "always", "0": "never", "false": "never", "no": "never"}.get(value, value)
    if value not in SPIN_POLICIES:
        raise ConfigError(f"DEPLOYLM_SPIN_WAIT={value!r} is not one of {', '.join(SPIN_POLICIES)}.")
    return value


# libgomp's spin count between parallel regions under "during-run": long enough to bridge the
# microsecond gaps between one forward pass's ops, short enough to free the core soon after a batch.
_GOMP_SERVING_SPINCOUNT = "10000"


def use_serving_threads() -> None:
    """For serving, before torch/onnxruntime start their thread pools. Fully passive threads pay a
    wake-up on every parallel op (several ms per batch-1 forward of MiniLM here); always-spinning
    threads steal the cores the event loop needs between batches. So: spin while a call runs, sleep
    right after it."""
    os.environ.setdefault("DEPLOYLM_SPIN_WAIT", "during-run")
    # onnxruntime reads the policy per session (runtime/ort_runner.py); libgomp (torch) only from its
    # environment when it loads, so the policy is translated for it here.
    policy = spin_wait()
    if policy == "during-run":
        os.environ.setdefault("GOMP_SPINCOUNT", _GOMP_SERVING_SPINCOUNT)
    elif policy == "never":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# onnxruntime graph transformers the onnxruntime runner turns off. With onnxruntime 1.32 on this project's
# CPU the fused SkipLayerNormalization kernel is slower than the Add + LayerNormalization it replaces on
# MiniLM's (tokens x 384) activations; benchmarks/optimize.py measures the kernels and whole models with and
# without it. (MatMulScaleFusion looked slower as a lone kernel too, but its FusedMatMul also absorbs the
# key transpose of attention, and without it a whole MiniLM was no faster; so it stays on.)
DEFAULT_ORT_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def ort_disabled_optimizers() -> tuple[str, ...]:
    """$DEPLOYLM_ORT_DISABLED_OPTIMIZERS: names separated by ';' or ','; "none" (or empty) keeps all of
    onnxruntime's fusions, as a plain InferenceSession (and Optimum's ORTModel) would."""
    env = os.environ.get("DEPLOYLM_ORT_DISABLED_OPTIMIZERS")
    if env is None:
        return DEFAULT_ORT_DISABLED_OPTIMIZERS
    if env.strip().lower() in ("", "none"):
        return ()
    return tuple(n.strip() for n in env.replace(",", ";").split(";") if n.strip())


def llama_python() -> Path | None:
    """Python of the llama.cpp peer's own venv (benchmarks): $DEPLOYLM_LLAMA_PYTHON or benchmarks/.llama-venv."""
    env = os.environ.get("DEPLOYLM_LLAMA_PYTHON")
    path = Path(env) if env else _REPO_ROOT / "benchmarks" / ".llama-venv" / "bin" / "python"
    return path if path.is_file() else None


def models_cache_dir() -> Path:
    """Where model files deploylm prepares itself live (the assembled Gemma GGUF, ...):
    $DEPLOYLM_MODELS_DIR, else .models/ in the repository (gitignored)."""
    env = os.environ.get("DEPLOYLM_MODELS_DIR")
    return Path(env).expanduser() if env else _REPO_ROOT / ".models"


def decoder_packed_linears() -> bool:
    """$DEPLOYLM_DECODER_PACKED: float decoder linears with panel-packed weights (runtime/decoder_linear.py);
    on by default, "0" keeps transformers' nn.Linear (the benchmark's ablation)."""
    return os.environ.get("DEPLOYLM_DECODER_PACKED", "1").lower() not in ("0", "false", "no")


def decoder_fast_path() -> bool:
    """$DEPLOYLM_DECODER_FAST_PATH: Llama-shaped decoders run the lean forward of runtime/decoder_fastpath.py
    (fused projections, fewer ops per layer); on by default, "0" runs transformers' forward (the ablation)."""
    return os.environ.get("DEPLOYLM_DECODER_FAST_PATH", "1").lower() not in ("0", "false", "no")


def verbose() -> bool:
    """$DEPLOYLM_VERBOSE=1 (or `deploylm --verbose`): library warnings and logs reach the terminal."""
    return os.environ.get("DEPLOYLM_VERBOSE", "0").lower() in ("1", "true", "yes")


def log_file(command: str) -> Path:
    """Where a command's library warnings go: $DEPLOYLM_LOG_DIR, else .deploylm-logs/ in the working
    directory (one file per command, overwritten by its next run)."""
    env = os.environ.get("DEPLOYLM_LOG_DIR")
    return (Path(env).expanduser() if env else Path.cwd() / ".deploylm-logs") / f"{command}.log"


def decode_kernel() -> bool:
    """$DEPLOYLM_DECODE_KERNEL=0 turns off the C++ decode-attention kernel (runtime/cpp_kernels.py): SDPA runs."""
    return os.environ.get("DEPLOYLM_DECODE_KERNEL", "1").lower() not in ("0", "false", "no")


def float_kernel() -> bool:
    """$DEPLOYLM_FLOAT_KERNEL=0 turns off the C++ float linear (runtime/cpp_kernels.py): fp32/bf16 decoder linears
    of a few rows run torch's matmul on the same packed weights (runtime/decoder_linear.py)."""
    return os.environ.get("DEPLOYLM_FLOAT_KERNEL", "1").lower() not in ("0", "false", "no")


def int8_kernel() -> bool:
    """$DEPLOYLM_INT8_KERNEL=0 turns off the C++ int8 linear (runtime/cpp_kernels.py): weight-int8 decoders use
    torch's int8 kernels (optimize/weight_int8.py says which, by row count)."""
    return os.environ.get("DEPLOYLM_INT8_KERNEL", "1").lower() not in ("0", "false", "no")
