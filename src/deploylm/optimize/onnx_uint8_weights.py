"""Symmetric int8 weights of a quantised ONNX graph stored as uint8 (value + 128, zero point 128), for CPUs
without VNNI.

There onnxruntime's u8 x s8 MatMul (MLAS) adds pairs of products in int16, which saturates on full-range int8
weights; its u8 x u8 kernel widens first and sums exactly. Shifting each signed weight and its zero point by 128
keeps every (q - zero_point) the same integer, so the rewritten graph computes what the ONNX int8 graph specifies
(onnx's reference evaluator gives the same logits). On the tiny random BERTs of the tests, onnxruntime's own u8
weights (asymmetric per channel) were less accurate at the logits; benchmarks/int8_weight_storage.py compares them.

onnxruntime's quantiser has no option for this (its u8 weights are quantised differently), hence this rewrite.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError

# op -> (input index of a quantised weight, input index of its zero point), for ops whose output depends only
# on (weight - zero point); every int8 initializer of the graph must sit in one of these slots.
SHIFTABLE_SLOTS = {"MatMulInteger": (1, 3), "QAttention": (1, 7), "DequantizeLinear": (0, 2)}


def signed_weight_slots(model) -> set[str]:
    """Names of the int8 initializers to shift; a ModelError if one is used where a shift would change the result."""
    import onnx

    signed = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    seen: set[str] = set()
    for node in model.graph.node:
        slots = SHIFTABLE_SLOTS.get(node.op_type)
        for k, name in enumerate(node.input):
            if name not in signed:
                continue
            seen.add(name)
            if slots is None or k not in slots:
                raise ModelError(f"int8 initializer {name} feeds input {k} of {node.op_type} '{node.name}', where "
                                 "storing it as uint8 would change the result; quantise this graph on a CPU with "
                                 "AVX-512 VNNI instead.")
            value, zero_point = slots
            if k == value and (len(node.input) <= zero_point or node.input[zero_point] not in signed):
                raise ModelError(f"{node.op_type} '{node.name}' has an int8 weight without an int8 zero point; "
                                 "its uint8 form would need one. Quantise this graph on a CPU with AVX-512 VNNI.")
    unused = signed - seen
    if unused:
        raise ModelError(f"int8 initializers {sorted(unused)[:3]} are not used by a top-level node (a subgraph?); "
                         "storing them as uint8 is not checked there. Quantise this graph on a CPU with AVX-512 VNNI.")
    return signed


def store_weights_as_uint8(model) -> int:
    """Rewrite `model` (an onnx.ModelProto) in place; returns how many initializers were shifted."""
    from onnx import numpy_helper

    import onnx

    names = signed_weight_slots(model)
    for tensor in model.graph.initializer:
        if tensor.name in names:
            shifted = (numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8)
            tensor.CopyFrom(numpy_helper.from_array(shifted, tensor.name))
    for info in (*model.graph.input, *model.graph.value_info):  # declared types of the shifted tensors
        if info.name in names:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return len(names)


def load_with_uint8_weights(path):
    """The ONNX graph at `path` with its int8 weights stored as uint8, and how many initializers were shifted."""
    import onnx

    model = onnx.load(str(path))
    return model, store_weights_as_uint8(model)
