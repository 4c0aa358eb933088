"""`deploylm quantize` on a decoder (task text-generation): weight-only variants of an fp32 causal LM, each
a registered handler (method -> writer of the variant's files), all gated by decoder_gate against the parent.

  weight-int8: every linear (attention, MLP, LM head) in per-channel int8 on fbgemm's kernels (weight_int8.py);
               embeddings, norms and biases stay fp32. Loaded with weight_int8.load_int8_model.
  bf16:        every weight in bfloat16 safetensors; plain `from_pretrained(dir, dtype=torch.bfloat16)` loads it.

The variant is written to a staging directory, loaded back the way the decoder runner loads it, gated, and
only then made an artifact (temp dir + rename): a refused variant leaves nothing behind.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..artifacts import MANIFEST, Artifact, check_output, clear_leftovers, create_artifact, work_dir
from ..errors import ConfigError
from ..runtime.compute import run_on_compute
from .decoder_gate import DecoderGateOptions, judge_decoder, run_decoder_gate, squad_file

DECODER_TASK = "text-generation"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".safetensors.index.json", ".bin.index.json")


def _copy_non_weight_files(src: Path, dst: Path) -> None:
    """Tokenizer, chat template, generation config...: everything of the parent but its weights and manifest,
    unless the variant's writer already wrote a file of that name."""
    for item in src.iterdir():
        if item.is_file() and item.name != MANIFEST and not item.name.endswith(WEIGHT_SUFFIXES) \
                and not (dst / item.name).exists():
            shutil.copy2(item, dst / item.name)


def _load_fp32(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _weight_int8_files(parent: Artifact, dest: Path) -> dict:
    from .weight_int8 import int8_summary, quantize_linears, save_int8

    model = quantize_linears(_load_fp32(parent.path))
    save_int8(model, dest)
    _copy_non_weight_files(parent.path, dest)
    return {"backend": "torch", **int8_summary(model)}


def _bf16_files(parent: Artifact, dest: Path) -> dict:
    import torch

    model = _load_fp32(parent.path).to(torch.bfloat16)
    model.save_pretrained(dest)
    _copy_non_weight_files(parent.path, dest)
    return {"backend": "torch", "dtype": "bfloat16", "weights": "every tensor in bfloat16, matmuls in bfloat16"}


# method -> writes the variant's files into a directory, returns what it did (manifest "optimization")
HANDLERS: dict[str, Callable[[Artifact, Path], dict]] = {"weight-int8": _weight_int8_files, "bf16": _bf16_files}


def check_decoder_method(method: str, backend: str | None = None) -> None:
    if method not in HANDLERS:
        raise ConfigError(f"Method '{method}' does not apply to a text-generation (decoder) artifact. Valid methods "
                          f"for decoders: {', '.join(HANDLERS)}.")
    if backend not in (None, "torch"):
        raise ConfigError(f"Decoder variants run on the torch backend; --backend {backend} does not apply. "
                          "Leave --backend out.")


def _check_parent(parent: Artifact) -> None:
    weights = (parent.manifest.get("decoder") or {}).get("weights", "fp32")
    if parent.format != "transformers" or weights != "fp32":
        raise ConfigError(f"{parent.path} holds {weights} weights; decoder variants are made from an fp32 artifact "
                          "(the one `deploylm import` writes) and gated against it. Quantise that one instead.")


def _load_variant(path: Path, method: str):
    from ..runtime.decoder_runner import load_causal_lm

    return load_causal_lm(path, method)  # exactly how the decoder runner will load the artifact


def _recorded(method: str, gate: DecoderGateOptions) -> dict:
    from .stages import QuantizeConfig, decoder_gate_fields, recorded_config

    return recorded_config(QuantizeConfig, method=method, backend="torch", **decoder_gate_fields(gate))


def _build_and_gate(parent: Artifact, staging: Path, method: str, gate: DecoderGateOptions) -> tuple[dict, dict]:
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    info = HANDLERS[method](parent, staging)
    variant = _load_variant(staging, method)
    built = time.perf_counter() - t0
    record = run_decoder_gate(_load_fp32(parent.path), variant, AutoTokenizer.from_pretrained(parent.path), gate,
                              backend=method)
    record["seconds"]["build_and_load"] = round(built, 1)
    return info, record


def quantize_decoder(parent: Artifact, output: str | Path, method: str, gate: DecoderGateOptions | None = None,
                     backend: str | None = None, overwrite: bool = False) -> Artifact:
    """A gated weight-only variant of the fp32 decoder artifact `parent`, written to `output`."""
    check_decoder_method(method, backend)
    _check_parent(parent)
    gate = gate or DecoderGateOptions()
    out = check_output(output, overwrite)
    squad_file(gate.data)  # a missing dataset fails before minutes of work
    clear_leftovers(out)
    staging = work_dir(out, "staging")
    staging.mkdir(parents=True)
    try:
        # Built and gated on the thread the variant's steps are timed on (one OpenMP team: runtime/compute.py).
        info, record = run_on_compute(_build_and_gate, parent, staging, method, gate)
        judge_decoder(record, gate, f"the {method} variant of {parent.path}")
        ppl, greedy = record["perplexity"], record["greedy"]
        metrics = {f"{Path(ppl['data']).parent.name}:dev-contexts": {
            "perplexity": ppl["variant"], "parent_perplexity": ppl["parent"], "texts": ppl["texts"],
            "tokens": ppl["tokens"], "data": ppl["data"], "greedy_agreement": greedy["to_first_divergence"]}}

        def copy_staged(tmp: Path) -> None:
            for item in staging.iterdir():
                if item.name != MANIFEST:
                    shutil.copy2(item, tmp / item.name)

        decoder = {**(parent.manifest.get("decoder") or {}), "weights": method}
        extra = {"method": method, "dtype": "int8" if method == "weight-int8" else "bf16", "optimization": info,
                 "gate": record, "gate_options": asdict(gate), "decoder": decoder}
        return create_artifact(out, copy_staged, stage="quantize", config=_recorded(method, gate),
                               parent=parent.as_parent(), task=parent.task, labels=parent.labels,
                               max_length=parent.max_length, fmt="transformers", metrics=metrics, extra=extra,
                               overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
