"""Open Inference Protocol v2 (KServe / Triton) tensors <-> texts and predictions, for both transports.

A model takes one input, TEXT: BYTES, shape [N] (or [N, 1]), one UTF-8 text per element.
Classification (and relation classification, of texts tagged <e1>..</e1> <e2>..</e2>) answers LABEL (BYTES [N])
and SCORE (FP32 [N]); token classification answers ENTITIES
(BYTES [N], one JSON list of {entity, text, start, end, score} per text).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Sequence

import numpy as np

from ..errors import RequestError
from .limits import decode_utf8

INPUT_NAME = "TEXT"
# Binary tensor data extension (Triton): BYTES elements are each a 4-byte little-endian length + the bytes.
_LEN = struct.Struct("<I")
# Tasks whose predictions are {"label", "score"}: relation classification labels a marked pair as classification
# labels a text.
LABEL_TASKS = ("classification", "relation-classification")


def model_outputs(task_name: str) -> list[tuple[str, str]]:
    if task_name in LABEL_TASKS:
        return [("LABEL", "BYTES"), ("SCORE", "FP32")]
    return [("ENTITIES", "BYTES")]


def model_metadata(model, versions: list[str]) -> dict:
    return {
        "name": model.name,
        "versions": versions,
        "platform": model.platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in model_outputs(model.task.name)],
    }


def check_input_tensor(name: Any, datatype: Any, shape: Any, n_inputs: int) -> int:
    """Validate the one TEXT tensor's header; return its element count."""
    if n_inputs != 1:
        raise RequestError(f"Expected exactly one input tensor '{INPUT_NAME}', got {n_inputs}.", 400)
    if name != INPUT_NAME:
        raise RequestError(f"Unknown input tensor '{name}'; this model takes one BYTES input '{INPUT_NAME}'.", 400)
    if datatype != "BYTES":
        raise RequestError(f"Input '{INPUT_NAME}' must have datatype BYTES (UTF-8 texts), got '{datatype}'.", 400)
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and d >= 0 for d in shape) or (len(shape) == 2 and shape[1] != 1)):
        raise RequestError(f"Input '{INPUT_NAME}' must have shape [N] or [N, 1], got {shape}.", 400)
    return int(shape[0])


def split_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """Binary BYTES tensor -> its elements; errors if lengths do not add up to the buffer."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise RequestError(f"Binary data of '{INPUT_NAME}' ends before element {len(items)} of {count}.", 400)
        (size,) = _LEN.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(f"Element {len(items)} of '{INPUT_NAME}' claims {size} bytes past the data end.", 400)
        items.append(raw[offset: offset + size])
        offset += size
    if offset != len(raw):
        raise RequestError(f"Binary data of '{INPUT_NAME}' has {len(raw) - offset} bytes beyond its {count} "
                           "elements; the shape and the data disagree.", 400)
    return items


def join_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in items)


def texts_from_elements(elements: Sequence[Any], count: int) -> list[str]:
    if len(elements) != count:
        raise RequestError(f"Input '{INPUT_NAME}' has shape [{count}] but {len(elements)} elements.", 400)
    if all(isinstance(e, str) for e in elements):
        return list(elements)
    if all(isinstance(e, (bytes, bytearray)) for e in elements):
        return decode_utf8(elements, INPUT_NAME)
    raise RequestError(f"Every element of '{INPUT_NAME}' must be a string (UTF-8 text).", 400)


def output_values(task_name: str, preds: list) -> dict[str, np.ndarray]:
    """Predictions -> output tensors as numpy arrays (BYTES as object arrays of bytes)."""
    if task_name in LABEL_TASKS:
        return {"LABEL": np.array([p["label"].encode() for p in preds], dtype=object),
                "SCORE": np.array([p["score"] for p in preds], dtype=np.float32)}
    return {"ENTITIES": np.array([json.dumps(p.get("entities", [])).encode() for p in preds], dtype=object)}


def select_outputs(values: dict[str, np.ndarray], requested: Sequence[str] | None) -> dict[str, np.ndarray]:
    if not requested:
        return values
    unknown = [n for n in requested if n not in values]
    if unknown:
        raise RequestError(f"Unknown output(s) {unknown}; this model has {sorted(values)}.", 400)
    return {n: values[n] for n in requested}


def datatype_of(arr: np.ndarray) -> str:
    return "FP32" if arr.dtype == np.float32 else "BYTES"


def to_raw(arr: np.ndarray) -> bytes:
    return join_bytes_tensor(list(arr)) if arr.dtype == object else arr.astype("<f4").tobytes()


def to_json_data(arr: np.ndarray) -> list:
    return [b.decode() for b in arr] if arr.dtype == object else [float(x) for x in arr]
