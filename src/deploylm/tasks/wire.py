"""What a task's requests and answers look like on the wire, in the terms every transport shares.

A task declares its Open Inference Protocol tensors (TensorSpec: name, datatype, shape with -1 for a variable
axis) and turns named input tensors or /v1 JSON items into its inputs, and its predictions into output arrays.
The transports (serving/oip.py, http_app.py, grpc_server.py) only move those arrays; they know no task.

Output arrays: BYTES as numpy object arrays of bytes, FP32 as float32, INT64 as int64; the first axis is the
request's items, further axes as the TensorSpec says (an embedding is FP32 [N, D])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import RequestError

TEXT_INPUT = "TEXT"  # the one input of every text-in task: BYTES [N], one UTF-8 text per element

# (value, where) -> the text to use, or RequestError(400). The server passes one that also applies its
# limits (serving/limits.py); `where` names the value in the request ("inputs[3]", "inputs[3].question").
TextCheck = Callable[[Any, str], str]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # OIP datatype: BYTES, FP32, INT64
    shape: tuple[int, ...] = (-1,)  # -1: any size (the first axis is the request's items)

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def plain_text(value: Any, where: str) -> str:
    """A TextCheck without server limits (library callers, tests)."""
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string, got {type(value).__name__}.", 400)
    return value


def bytes_array(values) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=object)


def width(shapes: dict[str, tuple[int, ...]] | None, output: str) -> int:
    """The last axis of `output` as the served model reported it (serving/engine.py), or -1 if unknown."""
    shape = (shapes or {}).get(output)
    return int(shape[-1]) if shape else -1
