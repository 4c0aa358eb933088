"""The torch decoder runner: one transformers causal LM, every sequence's KV, and a packed step.

`step(StepBatch)` runs prefill chunks of some sequences and single decode tokens of others in one forward
(continuous batching); logits come back only for the rows that sample. Backends differ only in how the model's
weights are loaded: fp32, bf16, or weight-int8 (per-channel int8 linears on fbgemm's kernels).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ArtifactError, BackendUnavailableError
from ..generation.types import StepBatch
from . import cpp_kernels
from .compute import run_on_compute, set_threads
from .decoder_attention import ATTN_IMPLEMENTATION, Segment, StepLayout, register

BACKENDS = ("fp32", "bf16", "weight-int8")


def artifact_backend(manifest: dict) -> str:
    """Which backend an artifact's weights need: recorded by `quantize` in manifest["decoder"]["weights"]."""
    return (manifest.get("decoder") or {}).get("weights", "fp32")


def load_causal_lm(path: str | Path, backend: str):
    """The transformers model behind a decoder artifact, on this backend, in eval mode."""
    from transformers import AutoModelForCausalLM

    if backend == "weight-int8":
        try:
            from ..optimize.weight_int8 import load_int8_model
        except ImportError as exc:  # pragma: no cover - part of deploylm
            raise BackendUnavailableError(f"weight-int8 needs deploylm.optimize.weight_int8 ({exc}).") from None
        model = load_int8_model(path)
    elif backend in ("fp32", "bf16"):
        dtype = torch.bfloat16 if backend == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        raise ArtifactError(f"Unknown decoder backend '{backend}'; known: {', '.join(BACKENDS)}.")
    return model.eval()


def _eos_ids(model, tokenizer=None) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        ids += [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def _logits_width(model, cfg) -> int:
    head = model.get_output_embeddings()
    for attr in ("out_features", "weight"):
        value = getattr(head, attr, None)
        if isinstance(value, int):
            return value
        if value is not None:
            return int(value.shape[0])
    return int(cfg.vocab_size)


def _weight_dtype(model) -> torch.dtype:
    """The dtype steps compute in: that of the first float parameter that is not a linear's weight."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    params = [p for p in model.parameters() if p.is_floating_point()]
    return next((p.dtype for p in params if id(p) not in linear), params[0].dtype)


def _widen_all_but_linears(model) -> None:
    """Every bf16 parameter and buffer to float32, except the weights of nn.Linear modules (packed as bf16 next).
    An embedding tied to the LM head gets its own float32 copy, so the head's weight stays bf16."""
    linear = {id(m.weight) for m in model.modules() if type(m) is torch.nn.Linear}
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            continue
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if t.dtype != torch.bfloat16:
                continue
            if id(t) in linear:
                setattr(module, name, torch.nn.Parameter(t.detach().float(), requires_grad=False))
            else:
                t.data = t.data.float()


class TorchDecoderRunner:
    """DecoderRunner over a transformers causal LM (any architecture whose attention goes through
    transformers' attention interface: Llama, Qwen2, Gemma3, ...)."""

    def __init__(self, model, backend: str = "fp32", tokenizer=None, max_context: int | None = None,
                 threads: int | None = None, packed_linears: bool | None = None):
        from .. import settings
        from .decoder_fastpath import fast_path_for
        from .decoder_linear import pack_linears

        register()
        model.config._attn_implementation = ATTN_IMPLEMENTATION
        for module in model.modules():  # sub-configs (Gemma's text config) keep their own copy
            cfg = getattr(module, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                cfg._attn_implementation = ATTN_IMPLEMENTATION
        self.model = model
        self.backend = backend
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = cfg.num_hidden_layers
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        packed = packed_linears if packed_linears is not None else settings.decoder_packed_linears()
        float_kernel = cpp_kernels.float_kernel() if packed else None
        # bf16 weights with the C++ float linear: the linears keep their bf16 panels (the kernel widens them as
        # it reads them) and everything else computes in float32, so the step runs the fp32 kernels, on half the
        # weight bytes. Without the kernel the model runs in bf16 throughout.
        widen = float_kernel is not None and _weight_dtype(model) == torch.bfloat16
        if widen:
            _widen_all_but_linears(model)
        self.dtype = _weight_dtype(model)
        # The C++ decode kernels (runtime/cpp_kernels.py) for float32 steps; None: torch's ops and SDPA.
        self._kernel = cpp_kernels.kernel() if self.dtype == torch.float32 else None
        # Fuses projections in place, so before the linears are packed; None: transformers' forward runs.
        self._lean = fast_path_for(model, self._kernel) if settings.decoder_fast_path() else None
        if packed:
            pack_linears(model, float_kernel)
        self.vocab_size = _logits_width(model, cfg)
        self.max_context = int(min(max_context or cfg.max_position_embeddings, cfg.max_position_embeddings))
        self.eos_token_ids: Sequence[int] = _eos_ids(model, tokenizer)
        elem = torch.empty((), dtype=self.dtype).element_size()
        self.kv_bytes_per_token = self.num_layers * 2 * self.kv_heads * self.head_dim * elem
        self.tokenizer = tokenizer
        self.threads = threads or settings.num_threads()
        self._slabs: dict[int, torch.Tensor] = {}
        self._owner = threading.get_ident()

    @classmethod
    def from_artifact(cls, artifact, backend: str | None = None, max_context: int | None = None):
        """Loaded on the compute thread, where its steps will run (one OpenMP team: runtime/compute.py)."""
        return run_on_compute(cls._load, artifact, backend, max_context)

    @classmethod
    def _load(cls, artifact, backend: str | None, max_context: int | None):
        from transformers import AutoTokenizer

        backend = backend or artifact_backend(artifact.manifest)
        model = load_causal_lm(artifact.path, backend)
        tokenizer = AutoTokenizer.from_pretrained(artifact.path)
        return cls(model, backend, tokenizer, max_context=max_context or artifact.max_length)

    # -- KV ------------------------------------------------------------------------------------------
    def _reserve(self, seq_id: int, capacity: int) -> None:
        old = self._slabs.get(seq_id)
        if old is not None and old.shape[3] >= capacity:
            return
        slab = torch.empty((self.num_layers, 2, self.kv_heads, capacity, self.head_dim), dtype=self.dtype)
        if old is not None:
            slab[:, :, :, :old.shape[3]] = old
        self._slabs[seq_id] = slab

    def _copy(self, src: int, dst: int, n: int) -> None:
        if n > self._slabs[dst].shape[3]:
            raise RuntimeError(f"KV copy of {n} tokens into a slab of {self._slabs[dst].shape[3]}")
        self._slabs[dst][:, :, :, :n] = self._slabs[src][:, :, :, :n]

    def kv_tokens_allocated(self) -> int:
        return sum(s.shape[3] for s in self._slabs.values())

    def has(self, seq_id: int) -> bool:
        return seq_id in self._slabs

    # -- step ----------------------------------------------------------------------------------------
    def step(self, batch: StepBatch) -> torch.Tensor:
        return run_on_compute(self._step, batch)

    @torch.inference_mode()
    def _step(self, batch: StepBatch) -> torch.Tensor:
        set_threads(self.threads)
        for seq_id in batch.free:
            self._slabs.pop(seq_id, None)
        for seq_id, capacity in batch.reserve.items():
            self._reserve(seq_id, capacity)
        for c in batch.copies:
            self._copy(c.src, c.dst, c.n_tokens)
        if not batch.chunks:
            return torch.empty((0, self.vocab_size))
        logits = self._forward(batch)
        for c in batch.snapshots:
            self._copy(c.src, c.dst, c.n_tokens)
        return logits

    def _forward(self, batch: StepBatch) -> torch.Tensor:
        ids, positions, segments, keep = [], [], [], []
        for chunk in batch.chunks:
            n = len(chunk.token_ids)
            slab = self._slabs[chunk.seq_id]
            if chunk.start_pos + n > slab.shape[3]:
                raise RuntimeError(f"sequence {chunk.seq_id}: {chunk.start_pos + n} tokens in a KV slab of "
                                   f"{slab.shape[3]} (the scheduler must reserve first)")
            segments.append(Segment(slab, chunk.start_pos, len(ids), n))
            ids += chunk.token_ids
            positions += range(chunk.start_pos, chunk.start_pos + n)
            if chunk.sample:
                keep.append(len(ids) - 1)
        layout = StepLayout(segments, self._kernel)
        if self._lean is not None:
            return self._lean(torch.tensor(ids), torch.tensor(positions), torch.tensor(keep, dtype=torch.long),
                              layout).float()
        out = self.model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]), use_cache=False,
                         logits_to_keep=torch.tensor(keep, dtype=torch.long), deploylm_layout=layout)
        return out.logits[0].float()
