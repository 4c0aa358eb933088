"""Peers a deploylm variant is compared with: the PyTorch fp32 eager model it came from, and
Optimum's onnxruntime path (export + ORTQuantizer avx512_vnni dynamic int8), built in Optimum's own
virtual environment and wrapped as a deploylm ONNX artifact so both ONNX files run under the same
onnxruntime, through the same runner, batching and measurement."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .. import settings
from ..artifacts import Artifact, create_artifact
from ..errors import BackendUnavailableError
from ..optimize.common import copy_aux_files, root_transformers_parent

PEER_SCRIPT = Path(__file__).with_name("peer_optimum.py")
# The peer is measured the way Optimum's ORTModel runs it: every onnxruntime fusion on, none of the
# session options deploylm's runner chooses (settings.ort_disabled_optimizers).
PEER_ENV = {"DEPLOYLM_ORT_DISABLED_OPTIMIZERS": "none"}


def pytorch_peer(art: Artifact) -> Artifact:
    return root_transformers_parent(art)


def optimum_peer(art: Artifact, workdir: Path, overwrite: bool = True) -> list[Artifact]:
    """[Optimum fp32 ONNX, Optimum int8] artifacts of art's PyTorch source, built with the peer venv."""
    source = root_transformers_parent(art)
    python = settings.peer_python()
    if python is None:
        raise BackendUnavailableError(
            "No Optimum peer environment: create one with `python3 -m venv benchmarks/.peer-venv && "
            "benchmarks/.peer-venv/bin/pip install -c constraints.txt torch==2.13.0 'optimum-onnx[onnxruntime]'` "
            "or set DEPLOYLM_PEER_PYTHON to its python.")
    raw = workdir / f".optimum-raw-{source.name}"
    shutil.rmtree(raw, ignore_errors=True)
    proc = subprocess.run([str(python), str(PEER_SCRIPT), str(source.path), str(raw), source.task],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendUnavailableError(f"Optimum peer build failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    info = json.loads((raw / "peer.json").read_text())
    made = []
    for name, sub, onnx_name in (("optimum-fp32", "fp32", "model.onnx"), ("optimum-int8", "int8", "model_quantized.onnx")):
        def write(tmp: Path, sub=sub, onnx_name=onnx_name) -> None:
            shutil.copy2(raw / sub / onnx_name, tmp / "model.onnx")
            copy_aux_files(source.path, tmp)

        made.append(create_artifact(workdir / f"{name}-{source.name}", write, stage="peer", config={"peer": name, **info},
                                    parent=source.as_parent(), task=source.task, labels=source.labels,
                                    max_length=source.max_length, fmt="onnx", extra={"method": name},
                                    overwrite=overwrite))
    shutil.rmtree(raw, ignore_errors=True)
    return made
