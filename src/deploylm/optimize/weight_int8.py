"""Weight-only int8 for decoders: every nn.Linear becomes an Int8Linear holding per-output-channel symmetric int8
weights (one bf16-exact fp32 scale per row). How it multiplies (deploylm's C++ kernel on AVX-512 VNNI or AVX2, or
torch's int8 kernels where that cannot run) is optimize/int8_matmul.py. The embedding table, norms and biases stay fp32; a
head tied to the embedding gets its own int8 copy and the table keeps serving lookups.

The activations are quantised to 8 bits at run time, one scale per token. Three things keep that from costing
accuracy (measured on SmolLM2, perplexity on SQuAD contexts):

- per token: each token (row) gets its own activation scale: an outlier token (decoders have them, often the
  first) would otherwise crush every other row's resolution.
- rotation: inputs are multiplied by a block-diagonal Hadamard matrix H (orthogonal, blocks of up to 64
  channels) and the weights stored as W H, so y = (x H)(W H)^T = x W^T. It spreads the few huge activation
  channels of a decoder over their block, so one channel no longer sets the quantisation step of a whole token
  (measured: +5.6 % perplexity without it, under +2 % with it).
- weight levels: see FULL_LEVELS. Each row's scale is the one of a small grid of clipping ratios that gives the
  least squared error (a row's largest weight alone would otherwise set its step).

On disk (save_int8): `model-int8.safetensors` with `<module>.weight_int8` (int8, W H), `<module>.weight_scale`
(fp32), `<module>.rotation_block` and every other tensor of the model in fp32, next to config.json. There is no
`model.safetensors`, so plain transformers refuses the directory instead of loading random linears;
`load_int8_model` is the way in.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError
from .int8_matmul import matmul_for

INT8_WEIGHTS = "model-int8.safetensors"
FORMAT_TAG = "deploylm-weight-int8/1"
# Weight levels. deploylm's C++ kernel (int8_matmul.VnniMatmul) sums u8 x s8 products exactly in int32 (VNNI, or
# on AVX2 the sign trick of csrc/int8_linear.cpp, which needs |w| <= 127), so weights use the full int8 range
# -127..127 (FULL_LEVELS). fbgemm on CPUs without VNNI (AVX2, AVX-512 without VNNI) adds pairs
# of products in int16, which saturates (checked here: all-255 activations x all-127 weights gave half the true
# sum); weights on -64..64 (SAFE_LEVELS: 2 * 255 * 64 < 32767) never saturate it. A variant is quantised on the
# levels of the kernel that will run it here (`weight_levels`); one with full levels loaded where only torch's
# kernels run takes torch's weight-only kernel for every row count (int8_matmul.TorchMatmul), never fbgemm.
# Full levels halve the weights' rounding error (measured on SmolLM2: the perplexity increase falls to about a
# third), which is why they are not given up everywhere for the sake of fbgemm.
FULL_LEVELS = 127
SAFE_LEVELS = 64
MAX_ROTATION_BLOCK = 64  # H stays 16 KiB (cache-resident); larger blocks add compute for little gain
CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(17))  # 1.0 .. 0.6 of a row's largest magnitude


def rotation_block(in_features: int) -> int:
    """Largest power of two dividing in_features, at most MAX_ROTATION_BLOCK; 0 (no rotation) below 8."""
    block = min(in_features & -in_features, MAX_ROTATION_BLOCK)
    return block if block >= 8 else 0


@functools.lru_cache(maxsize=None)
def hadamard(n: int) -> torch.Tensor:
    """Sylvester's Hadamard matrix of order n (a power of two), scaled to be orthogonal; symmetric, so H H = I."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / n ** 0.5).float()


def rotate(x: torch.Tensor, block: int) -> torch.Tensor:
    """x [..., K] times blockdiag(H, H, ...) along the last axis."""
    if not block:
        return x
    return (x.reshape(-1, block) @ hadamard(block)).reshape(x.shape)


def weight_levels() -> int:
    """FULL_LEVELS where deploylm's C++ int8 kernel runs (this CPU has AVX-512 VNNI or AVX2, the kernel built),
    else SAFE_LEVELS."""
    from ..runtime import cpp_kernels

    return FULL_LEVELS if cpp_kernels.int8_kernel() is not None else SAFE_LEVELS


def quantize_weight(weight: torch.Tensor, levels: int = SAFE_LEVELS,
                    rows_per_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per row: (int8 [out, in] in -levels..levels, fp32 scale [out]) with
    weight ~= int8 * scale[:, None]; each row's scale from the clipping ratio of least squared error."""
    if not 1 <= levels <= FULL_LEVELS:
        raise ValueError(f"int8 weight levels must be 1..{FULL_LEVELS}, not {levels}")
    qs, scales = [], []
    for w in weight.detach().float().split(rows_per_chunk):
        amax = w.abs().amax(dim=1, keepdim=True)
        amax = torch.where(amax > 0, amax, torch.ones_like(amax))  # an all-zero row: any scale > 0
        best_q, best_s, best_err = None, None, None
        for ratio in CLIP_RATIOS:
            # bf16-exact: the plain kernel takes bf16 scales, so rounding them there must change nothing
            scale = (amax * ratio / levels).to(torch.bfloat16).float()
            q = torch.round(w / scale).clamp_(-levels, levels)
            err = (q * scale - w).square_().sum(dim=1, keepdim=True)
            if best_q is None:
                best_q, best_s, best_err = q, scale, err
                continue
            better = err < best_err
            best_q = torch.where(better, q, best_q)
            best_s, best_err = torch.where(better, scale, best_s), torch.where(better, err, best_err)
        qs.append(best_q.to(torch.int8))
        scales.append(best_s[:, 0])
    return torch.cat(qs), torch.cat(scales)


class Int8Linear(nn.Module):
    """y = x W^T + bias with W H held as int8 * scale (see the module docstring), multiplied by the kernel of
    int8_matmul.matmul_for; the output has the input's dtype. `rotation_block` 0 means no rotation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rotation_block: int = 0):
        super().__init__()
        if rotation_block and in_features % rotation_block:
            raise ArtifactError(f"A rotation block of {rotation_block} does not divide {in_features} input features; "
                                "the artifact is damaged.")
        self.in_features, self.out_features = in_features, out_features
        self.rotation_block = rotation_block
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.tied_to: str | None = None  # the fp32 tensor this layer's weight was copied from, if shared
        self._matmul = None

    @classmethod
    def from_float(cls, linear: nn.Linear, levels: int | None = None) -> "Int8Linear":
        """Quantised on `levels` (default: weight_levels() of this machine)."""
        block = rotation_block(linear.in_features)
        q, scale = quantize_weight(rotate(linear.weight.detach().float(), block), levels or weight_levels())
        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls.from_int8(q, scale, bias, block)

    @classmethod
    def from_int8(cls, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                  rotation_block: int = 0) -> "Int8Linear":
        """From stored (already rotated) int8 weights and their scales."""
        module = cls(weight_int8.shape[1], weight_int8.shape[0], bias is not None, rotation_block)
        module.set_weight(weight_int8, scale)
        if bias is not None:
            module.bias = bias.detach().float().clone()
        return module

    def set_weight(self, weight_int8: torch.Tensor, scale: torch.Tensor) -> None:
        if weight_int8.dtype != torch.int8 or weight_int8.shape != (self.out_features, self.in_features):
            raise ArtifactError(f"int8 weight of shape {tuple(weight_int8.shape)} ({weight_int8.dtype}) does not fit "
                                f"a linear {self.in_features} -> {self.out_features}; the artifact is damaged.")
        low, high = torch.aminmax(weight_int8) if weight_int8.numel() else (0, 0)
        if int(low) < -FULL_LEVELS:
            raise ArtifactError(f"int8 weight value {int(low)} is outside the symmetric range -{FULL_LEVELS}.."
                                f"{FULL_LEVELS}; this is not a deploylm weight-int8 tensor.")
        self.levels = max(-int(low), int(high))
        self._matmul = matmul_for(weight_int8, scale, fbgemm_safe=self.levels <= SAFE_LEVELS)

    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 [out, in], fp32 scale [out]), unpacked from the kernel's layout (no other copy is kept)."""
        return self._matmul.weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x.reshape(-1, self.in_features).float(), self.bias, self.rotation_block)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # the bias buffer
        q, scale = self.int8_weight()
        destination[prefix + "weight_int8"] = q
        destination[prefix + "weight_scale"] = scale
        destination[prefix + "rotation_block"] = torch.tensor(self.rotation_block, dtype=torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        keys = tuple(prefix + k for k in ("weight_int8", "weight_scale", "rotation_block"))
        if all(k in state_dict for k in keys):
            block = int(state_dict[keys[2]])
            if block and self.in_features % block:
                raise ArtifactError(f"{prefix}rotation_block {block} does not divide {self.in_features} input "
                                    "features; the artifact is damaged.")
            self.rotation_block = block
            self.set_weight(state_dict[keys[0]], state_dict[keys[1]].float())
        else:
            missing_keys.extend(k for k in keys if k not in state_dict)
        rest = {k: v for k, v in state_dict.items() if k not in keys}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"rotation_block={self.rotation_block}")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_linears(model: nn.Module, levels: int | None = None) -> nn.Module:
    """Swap every nn.Linear for an Int8Linear, in place (any architecture: modules are found by type, not name),
    on `levels` (default: weight_levels()). A linear whose weight is shared with another module (a head tied to
    the embedding) is quantised from a copy; the other module keeps its fp32 tensor."""
    levels = levels or weight_levels()
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    linears = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in linears:
        shared = [o for o in owners.get(id(linear.weight), []) if o != f"{name}.weight"]
        module = Int8Linear.from_float(linear, levels)
        module.tied_to = shared[0] if shared else None
        _set_module(model, name, module)
    return model


def int8_summary(model: nn.Module) -> dict:
    """What is int8 and what stays fp32, with byte counts: for the manifest."""
    int8 = {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    int8_bytes = sum(m.in_features * m.out_features for m in int8.values())
    scale_bytes = sum(4 * m.out_features for m in int8.values())
    fp32 = {n: t for n, t in model.state_dict().items()
            if not n.endswith((".weight_int8", ".weight_scale")) and t.is_floating_point()}
    levels = max((m.levels for m in int8.values()), default=0)
    return {
        "kernel": next((m._matmul.kernel for m in int8.values()), None),
        "weights": f"int8 levels -{levels}..{levels}, symmetric, one fp32 scale per output channel "
                   "(least-squares clipping)",
        "rotation": "inputs times a block-diagonal Hadamard matrix, weights stored as W H",
        "rotation_blocks": {str(b): sum(m.rotation_block == b for m in int8.values())
                            for b in sorted({m.rotation_block for m in int8.values()})},
        "activations": "quantised at run time to 8 bits, one scale per token; output fp32",
        "int8_linears": sorted(int8),
        "tied_copies": {n: m.tied_to for n, m in sorted(int8.items()) if m.tied_to},
        "fp32_tensors": sorted(fp32),
        "bytes": {"int8_weights": int8_bytes, "fp32_scales": scale_bytes,
                  # torch's weight-only kernel (int8_matmul.TorchMatmul) reads a second copy beside fbgemm's
                  "int8_second_copies": sum(m._matmul.plain_copy_bytes() for m in int8.values()),
                  "fp32_other": sum(t.numel() * t.element_size() for t in fp32.values())},
    }


def save_int8(model: nn.Module, directory: str | Path) -> Path:
    """Write model-int8.safetensors (+ config.json, generation_config.json) for load_int8_model."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key in seen:  # safetensors stores no shared tensors: keep one, restore the other name on load
            aliases[name] = seen[key]
            continue
        seen[key] = name
        state[name] = tensor.detach().contiguous()
    if not any(n.endswith(".weight_int8") for n in state):
        raise ArtifactError("save_int8 got a model without Int8Linear layers; call quantize_linears first.")
    tied = {n: m.tied_to for n, m in model.named_modules() if isinstance(m, Int8Linear) and m.tied_to}
    path = directory / INT8_WEIGHTS
    save_file(state, str(path), metadata={"format": FORMAT_TAG, "aliases": json.dumps(aliases),
                                          "tied": json.dumps(tied)})
    model.config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)
    return path


def load_int8_model(artifact_dir: str | Path) -> nn.Module:
    """The causal LM of a weight-int8 directory, in eval mode. Built from config.json with initialisation off
    (the unused fp32 linear tensors are allocated but never written, then dropped), each Int8Linear packed as its
    tensors are read, so loading costs about the int8 model's memory."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    directory = Path(artifact_dir)
    path = directory / INT8_WEIGHTS
    if not path.is_file():
        raise ArtifactError(f"{directory} has no {INT8_WEIGHTS}, so it is not a weight-int8 decoder. Make one with "
                            "`deploylm quantize ARTIFACT --method weight-int8 --output DIR`.")
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory), dtype=torch.float32)
    expected = set(model.state_dict())
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT_TAG:
            raise ArtifactError(f"{path} is not in the {FORMAT_TAG} layout (found {meta.get('format')!r}).")
        keys, tied = set(fh.keys()), json.loads(meta.get("tied", "{}"))
        names = sorted(k[: -len(".weight_int8")] for k in keys if k.endswith(".weight_int8"))
        for name in names:
            _set_module(model, name, _read_int8_linear(fh, keys, name, model, path, tied.get(name)))
        prefixes = tuple(f"{n}." for n in names)
        rest = {k: fh.get_tensor(k) for k in keys if not k.startswith(prefixes)}
    for name, target in json.loads(meta.get("aliases", "{}")).items():
        rest[name] = rest[target]
    wanted = {k for k in expected if not k.startswith(prefixes)}
    missing, unexpected = sorted(wanted - set(rest)), sorted(set(rest) - wanted)
    if missing or unexpected:
        raise ArtifactError(f"{path} does not match {type(model).__name__} built from its config.json: missing "
                            f"{missing[:5]}, unexpected {unexpected[:5]}. Re-create it with `deploylm quantize`.")
    model.load_state_dict(rest, strict=False, assign=True)
    _load_generation_config(model, directory)
    return model.eval()


def _read_int8_linear(fh, keys: set, name: str, model: nn.Module, path: Path, tied_to: str | None) -> Int8Linear:
    try:
        old = model.get_submodule(name)
    except AttributeError:
        old = None
    parts = ("weight_int8", "weight_scale", "rotation_block")
    if not isinstance(old, nn.Linear) or any(f"{name}.{p}" not in keys for p in parts):
        raise ArtifactError(f"{path} holds int8 weights for '{name}', which is not a linear layer of "
                            f"{type(model).__name__} or lacks {', '.join(parts)}; the artifact is damaged or its "
                            "config and weights do not belong together.")
    bias = None
    if old.bias is not None:
        if f"{name}.bias" not in keys:
            raise ArtifactError(f"{path} lacks {name}.bias, which {type(model).__name__} has.")
        bias = fh.get_tensor(f"{name}.bias")
    weight, scale, block = (fh.get_tensor(f"{name}.{p}") for p in parts)
    if weight.shape != (old.out_features, old.in_features):
        raise ArtifactError(f"{path}: {name} is {tuple(weight.shape)} but the config makes it "
                            f"{(old.out_features, old.in_features)}; config and weights do not belong together.")
    module = Int8Linear.from_int8(weight, scale.float(), bias, int(block))
    module.tied_to = tied_to
    return module


def _load_generation_config(model: nn.Module, directory: Path) -> None:
    from transformers import GenerationConfig

    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(directory)
