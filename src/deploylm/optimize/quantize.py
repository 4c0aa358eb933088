"""Quantisation of an artifact, each method through the library that does it well:

  dynamic-int8 (onnxruntime, default): ORT quantize_dynamic, int8 weights per output channel
      (per-tensor visibly damages MiniLM, ASSETS.md), activations quantised at run time; applied to
      the unfused export of a transformers artifact (the session fuses it), or to an ONNX parent's
      graph as it is (an O2-fused parent's Attention becomes QAttention).
  static-int8 (onnxruntime): ORT quantize_static, QDQ format, per-channel int8 weights, uint8
      activations with ranges calibrated (MinMax) on N examples of the training split.
  bf16 (torch): weights stored in bfloat16, run under autocast (this CPU has AVX512-BF16; ORT's CPU
      provider has no bf16 MatMul kernel, checked: "Could not find an implementation for MatMul(13)").

torchao int8 (dynamic and weight-only) ran slower than fp32 eager on this CPU without torch.compile in an
exploratory check, so the torch backend offers bf16 only (see the notes in benchmarks/results/optimize.md).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import Artifact
from ..errors import ConfigError, DataError
from ..machine import has_vnni
from .common import check_supported, copy_aux_files, task_data
from .embedding_gate import DEFAULT_CORPUS
from .first_token import recorded_rewrites
from .gate import GateOptions, build_gated_variant, has_dev_metric

METHODS = {"dynamic-int8": ("onnxruntime",), "static-int8": ("onnxruntime",), "bf16": ("torch",)}
BACKENDS = ("onnxruntime", "torch")
DECODER_TASK = "text-generation"  # dispatched to decoder_quantize.py, whose HANDLERS name its methods
DECODER_METHODS = ("weight-int8",)  # decoder-only: named in the error an encoder gets for them


def check_method(method: str, backend: str | None) -> str:
    if method not in METHODS:
        hint = " (weight-int8 is for text-generation artifacts)" if method in DECODER_METHODS else ""
        raise ConfigError(f"Unknown quantisation method '{method}'{hint}. Valid methods: {', '.join(METHODS)}.")
    if backend is None:
        return METHODS[method][0]
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend '{backend}'. Valid backends: {', '.join(BACKENDS)}.")
    if backend not in METHODS[method]:
        why = {("bf16", "onnxruntime"): "onnxruntime's CPU provider has no bfloat16 MatMul kernel",
               ("dynamic-int8", "torch"): "torchao int8 runs slower than fp32 eager on CPU without torch.compile",
               ("static-int8", "torch"): "torch's static int8 (torch.ao) is deprecated and torchao has no CPU path"}
        raise ConfigError(f"Method {method} is not offered on backend {backend} ({why.get((method, backend), 'unsupported')}). "
                          f"Use --backend {METHODS[method][0]}.")
    return backend


def calibration_examples(parent: Artifact, data: str | None, samples: int, seed: int = 0) -> list:
    """N inputs drawn (seeded) from the training split of the artifact's dataset."""
    from ..data import load_dataset

    if samples < 1:
        raise ConfigError(f"--calibration-samples must be at least 1, not {samples}.")
    source = task_data(parent, data)
    ds = load_dataset(source)
    if "train" not in ds.splits or len(ds.splits["train"]) == 0:
        raise DataError(f"Calibration data {ds.source} has no (or an empty) train split; static int8 calibrates on "
                        "training examples. Pass --data pointing at a dataset with a non-empty train split.")
    inputs = ds.split("train").inputs
    idx = np.random.default_rng(seed).permutation(len(inputs))[:samples]
    return [inputs[i] for i in sorted(idx)]


def _calibration_reader(parent: Artifact, model_path: Path, examples: list):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader

    from ..evaluation import load_tokenizer
    from ..runtime.batching import length_batches, pad_batch
    from ..tasks import task_for

    tokenizer = load_tokenizer(parent)
    feats, _ = task_for(parent).encode(examples, tokenizer, parent.max_length)
    names = [i.name for i in ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).get_inputs()]
    batches = [pad_batch([feats[i] for i in idx], tokenizer.pad_token_id or 0, names) for idx in length_batches(feats, 8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    return Reader()


def _ort_quantize(src: Path, dst: Path, method: str, parent: Artifact, calibration: list | None) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    # Needed on fused graphs (com.microsoft ops carry no type info for the quantiser), ASSETS.md.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    # Weights: symmetric int8 per output channel. Without VNNI they are stored as uint8 (onnx_uint8_weights.py):
    # the same integers, which onnxruntime's u8 x u8 kernel sums without the int16 saturation of its u8 x s8 one.
    # The artifact is quantised for the CPU it is built on, and the manifest says which storage it has.
    vnni = has_vnni()
    weight_name = "int8" if vnni else "uint8 (int8 + 128)"
    if method == "dynamic-int8":
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8, extra_options=extra)
        if not vnni:
            _store_as_uint8(dst)
        return {"per_channel": True, "weight_type": weight_name}
    # Symbolic shape inference types the outputs of fused com.microsoft ops; without it the calibrator
    # sees no float activations there and silently quantises weights only.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="deploylm-static-") as tmp:
        typed = Path(tmp) / "typed.onnx"
        quant_pre_process(str(src), str(typed), skip_optimization=True, skip_onnx_shape=True)
        quantize_static(str(typed), str(dst), _calibration_reader(parent, typed, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={**extra, "WeightSymmetric": True, "ActivationSymmetric": False})
    if not vnni:
        _store_as_uint8(dst)
    return {"per_channel": True, "format": "QDQ", "weight_type": weight_name,
            "activation_type": "uint8", "calibration_samples": len(calibration or [])}



def _store_as_uint8(path: Path) -> None:
    import onnx

    from .onnx_uint8_weights import load_with_uint8_weights

    onnx.save(load_with_uint8_weights(path)[0], str(path))


def _ort_files(parent: Artifact, dest: Path, method: str, calibration: list | None,
               all_tokens_last_layer: bool = False) -> dict:
    from .export_onnx import build_onnx_files

    info: dict = {"backend": "onnxruntime"}
    with tempfile.TemporaryDirectory(prefix="deploylm-quant-") as tmp:
        if parent.format == "onnx":
            src = parent.path / "model.onnx"
            info["source"] = "parent ONNX graph"
            info["rewrites"] = recorded_rewrites(parent)
        else:
            # dynamic-int8 quantises the *unfused* export and leaves fusion to the session (ORT_ENABLE_ALL:
            # DynamicQuantizeMatMul, MatMulIntegerToFloat, LayerNorm/GELU): on MiniLM it measured faster than
            # int8 of the python-fused graph (QAttention); see dynamic-int8 vs dynamic-int8-of-O2 in
            # benchmarks/results/optimize.md.
            # Static QDQ needs typed activations everywhere, which the O2-fused graph gives it.
            cfg = check_supported(parent)
            info["export"] = build_onnx_files(parent, Path(tmp), "O2" if method == "static-int8" else None, cfg,
                                              all_tokens_last_layer)
            info["rewrites"] = info["export"]["rewrites"]
            src = Path(tmp) / "model.onnx"
        info.update(_ort_quantize(src, dest / "model.onnx", method, parent, calibration))
    copy_aux_files(parent.path, dest)
    return info


def _torch_bf16_files(parent: Artifact, dest: Path) -> dict:
    import torch

    from ..tasks import task_for

    model = task_for(parent).load_model(str(parent.path)).to(torch.bfloat16)
    model.save_pretrained(dest)
    for item in parent.path.iterdir():  # tokenizer files, not the fp32 weights
        if item.is_file() and item.name not in {"manifest.json", "config.json"} and not item.name.endswith(
                (".safetensors", ".bin")) and not (dest / item.name).exists():
            shutil.copy2(item, dest / item.name)
    return {"backend": "torch", "dtype": "bfloat16"}


@dataclass(frozen=True)
class VariantPlan:
    write: Callable[[Path], dict]  # fills the staging directory, returns what it did (manifest "optimization")
    fmt: str
    dtype: str | None = None


def _plan_bf16(parent: Artifact, method: str, gate, calibration_samples: int, all_tokens: bool) -> VariantPlan:
    if parent.format != "transformers":
        raise ConfigError(f"bf16 runs on the torch backend and needs a transformers-format artifact; {parent.path} "
                          f"is '{parent.format}'. Quantise its transformers-format parent instead.")
    return VariantPlan(lambda d: _torch_bf16_files(parent, d), "transformers", "bf16")


def _plan_ort(parent: Artifact, method: str, gate, calibration_samples: int, all_tokens: bool) -> VariantPlan:
    parent_rewrites = recorded_rewrites(parent)
    if all_tokens and parent.format == "onnx" and parent_rewrites:
        raise ConfigError(f"{parent.path} is an ONNX graph already exported with {', '.join(parent_rewrites)}; "
                          "quantize keeps an ONNX parent's graph as it is. Export its transformers-format parent "
                          "again with --all-tokens-last-layer and quantise that, or quantise the transformers "
                          "artifact directly with --all-tokens-last-layer.")
    calibration = calibration_examples(parent, gate.data, calibration_samples) if method == "static-int8" else None
    return VariantPlan(lambda d: _ort_files(parent, d, method, calibration, all_tokens), "onnx")


# Encoder methods: name -> how its variant is made. A new method is one entry here (and its backends in METHODS).
ENCODER_HANDLERS: dict[str, Callable[..., VariantPlan]] = {"dynamic-int8": _plan_ort, "static-int8": _plan_ort,
                                                          "bf16": _plan_bf16}


def quantize(artifact: str | Path | Artifact, output: str | Path, method: str, backend: str | None = None,
             gate: GateOptions | None = None, calibration_samples: int | None = None,
             parity_tolerance: float | None = None, all_tokens_last_layer: bool = False,
             overwrite: bool = False, decoder_gate=None) -> Artifact:
    """deploylm quantize: a quantised variant of ARTIFACT, parity-checked and gated against it.

    all_tokens_last_layer: when a transformers parent is exported first, keep the classifier's last
    layer on every token (see first_token.py); an ONNX parent's graph is quantised as it is.
    A text-generation parent goes to decoder_quantize (gated by `decoder_gate`, a DecoderGateOptions)."""
    from .stages import QuantizeConfig, cosine_fields, gate_fields, recorded_config

    parent = artifact if isinstance(artifact, Artifact) else Artifact.open(artifact)
    if parent.task == DECODER_TASK:
        from .decoder_quantize import quantize_decoder

        if parity_tolerance is not None or all_tokens_last_layer:
            raise ConfigError("--parity-tolerance and --all-tokens-last-layer are encoder options; a decoder variant "
                              "is gated by perplexity (--max-ppl-increase). Leave them out.")
        return quantize_decoder(parent, output, method, gate=decoder_gate, backend=backend, overwrite=overwrite)
    backend = check_method(method, backend)
    gate = gate or GateOptions()
    # Without a dev metric (sentence embeddings) the gate compares embeddings with the parent's by cosine
    # similarity over a real corpus (embedding_gate.py); that corpus is also static-int8's calibration data.
    cosine_gate = not has_dev_metric(parent.task)
    if cosine_gate:
        gate = replace(gate, data=gate.data or DEFAULT_CORPUS)
    calibration_samples = calibration_samples or QuantizeConfig.model_fields["calibration_samples"].default
    check_supported(parent)
    config = recorded_config(QuantizeConfig, method=method, backend=backend, calibration_samples=calibration_samples,
                             parity_tolerance=parity_tolerance, all_tokens_last_layer=all_tokens_last_layer,
                             **gate_fields(gate), **cosine_fields(gate))
    plan = ENCODER_HANDLERS[method](parent, method, gate, calibration_samples, all_tokens_last_layer)
    return build_gated_variant(parent, output, plan.write, stage="quantize", fmt=plan.fmt, method=method,
                               config=config, gate=gate, dtype=plan.dtype, parity_tolerance=parity_tolerance,
                               overwrite=overwrite, cosine_gate=cosine_gate)
