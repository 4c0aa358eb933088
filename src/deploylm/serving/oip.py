"""Open Inference Protocol v2 (KServe / Triton) tensors, for both transports.

What a model takes and answers is its task's (tasks/wire.py: Task.oip_inputs, oip_outputs, oip_values,
inputs_from_oip): this module checks input tensor headers against those specs, splits and joins BYTES tensors,
and encodes output arrays of any rank (JSON `data` flattened row-major as the spec says, or raw little-endian
bytes for the binary extension and gRPC), with the array's own shape.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from ..errors import RequestError
from ..tasks.wire import TEXT_INPUT, TensorSpec
from .limits import decode_utf8

INPUT_NAME = TEXT_INPUT  # the text tasks' one input: what the load generator and benchmarks send
# Binary tensor data extension (Triton): BYTES elements are each a 4-byte little-endian length + the bytes.
_LEN = struct.Struct("<I")
_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(object): "BYTES"}


def model_metadata(model, versions: list[str]) -> dict:
    return {
        "name": model.name,
        "versions": versions,
        "platform": model.platform,
        "inputs": [t.metadata() for t in model.task.oip_inputs],
        "outputs": [t.metadata() for t in model.task.oip_outputs(model.output_shapes)],
    }


def _takes(specs: Sequence[TensorSpec]) -> str:
    if len(specs) == 1:
        return f"one {specs[0].datatype} input '{specs[0].name}'"
    return "the inputs " + ", ".join(f"'{s.name}' ({s.datatype})" for s in specs)


def check_input_tensor(spec: TensorSpec, datatype: Any, shape: Any) -> int:
    """Validate one BYTES input tensor's header against its spec; return its element count."""
    if datatype != spec.datatype:
        raise RequestError(f"Input '{spec.name}' must have datatype {spec.datatype} (UTF-8 texts), got "
                           f"'{datatype}'.", 400)
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and d >= 0 for d in shape) or (len(shape) == 2 and shape[1] != 1)):
        raise RequestError(f"Input '{spec.name}' must have shape [N] or [N, 1], got {shape}.", 400)
    return int(shape[0])


def check_inputs(headers: Sequence[tuple[Any, Any, Any]], specs: Sequence[TensorSpec]) -> list[int]:
    """(name, datatype, shape) of each input tensor, as sent -> each one's element count. Every spec must be
    sent exactly once, and every tensor must have the same number of items."""
    if len(headers) != len(specs):
        expected = f"exactly one input tensor '{specs[0].name}'" if len(specs) == 1 else (
            f"exactly {len(specs)} input tensors (" + ", ".join(f"'{s.name}'" for s in specs) + ")")
        raise RequestError(f"Expected {expected}, got {len(headers)}.", 400)
    by_name, counts, seen = {s.name: s for s in specs}, [], set()
    for name, datatype, shape in headers:
        if name not in by_name:
            raise RequestError(f"Unknown input tensor '{name}'; this model takes {_takes(specs)}.", 400)
        if name in seen:
            raise RequestError(f"Input tensor '{name}' is sent twice; this model takes {_takes(specs)}.", 400)
        seen.add(name)
        counts.append(check_input_tensor(by_name[name], datatype, shape))
    if len(set(counts)) > 1:
        sizes = ", ".join(f"'{h[0]}' {c}" for h, c in zip(headers, counts))
        raise RequestError(f"Input tensors must hold one element per item each; their sizes differ ({sizes}).", 400)
    return counts


def split_bytes_tensor(raw: bytes, count: int, name: str = INPUT_NAME) -> list[bytes]:
    """Binary BYTES tensor -> its elements; errors if lengths do not add up to the buffer."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise RequestError(f"Binary data of '{name}' ends before element {len(items)} of {count}.", 400)
        (size,) = _LEN.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(f"Element {len(items)} of '{name}' claims {size} bytes past the data end.", 400)
        items.append(raw[offset: offset + size])
        offset += size
    if offset != len(raw):
        raise RequestError(f"Binary data of '{name}' has {len(raw) - offset} bytes beyond its {count} "
                           "elements; the shape and the data disagree.", 400)
    return items


def join_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in items)


def texts_from_elements(elements: Sequence[Any], count: int, name: str = INPUT_NAME) -> list[str]:
    if len(elements) != count:
        raise RequestError(f"Input '{name}' has shape [{count}] but {len(elements)} elements.", 400)
    if all(isinstance(e, str) for e in elements):
        return list(elements)
    if all(isinstance(e, (bytes, bytearray)) for e in elements):
        return decode_utf8(elements, name)
    raise RequestError(f"Every element of '{name}' must be a string (UTF-8 text).", 400)


def output_values(model, preds: list) -> dict[str, np.ndarray]:
    """Predictions -> the model's output tensors, as its task encodes them."""
    return model.task.oip_values(preds)


def select_outputs(values: dict[str, np.ndarray], requested: Sequence[str] | None) -> dict[str, np.ndarray]:
    if not requested:
        return values
    unknown = [n for n in requested if n not in values]
    if unknown:
        raise RequestError(f"Unknown output(s) {unknown}; this model has {sorted(values)}.", 400)
    return {n: values[n] for n in requested}


def datatype_of(arr: np.ndarray) -> str:
    return _DATATYPES[arr.dtype]  # a KeyError here is a task returning a dtype OIP has no name for: a bug


def shape_of(arr: np.ndarray) -> list[int]:
    return [int(d) for d in arr.shape]


def to_raw(arr: np.ndarray) -> bytes:
    if arr.dtype == object:
        return join_bytes_tensor(list(arr.reshape(-1)))
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()  # row-major, little-endian


def to_json_data(arr: np.ndarray) -> list:
    flat = arr.reshape(-1)  # the spec's JSON `data` is the tensor flattened in row-major order
    return [b.decode() for b in flat] if arr.dtype == object else flat.tolist()
