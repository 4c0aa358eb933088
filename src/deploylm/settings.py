"""The one place environment variables are read."""

from __future__ import annotations

import os
from pathlib import Path

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


def spin_wait() -> bool:
    """Whether math threads busy-wait between calls ($DEPLOYLM_SPIN_WAIT, default on: best for offline
    batches). A server turns it off (see use_passive_threads)."""
    return os.environ.get("DEPLOYLM_SPIN_WAIT", "1").lower() not in ("0", "false", "no")


def use_passive_threads() -> None:
    """For serving, before torch/onnxruntime start their thread pools: between batches, spinning
    OpenMP/ORT workers steal the cores that the event loop needs to parse and answer requests."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["DEPLOYLM_SPIN_WAIT"] = "0"
