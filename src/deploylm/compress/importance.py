"""Importance of attention heads and FFN neurons, measured on task data through masks.

transformers 5 removed `head_mask`, so the masks are applied with forward pre-hooks on the modules that read
the units' outputs: attention.output.dense reads the heads' concatenated contexts, output.dense reads the FFN
activations. A mask of ones changes nothing; the gradient of the loss with respect to unit u's mask is
Σ_positions activation_u · ∂L/∂activation_u (gradient × activation, Michel et al. 2019). The masks carry a batch
axis, so one backward gives every example's own gradient: what the Fisher of Kwon et al. 2022 needs (Σ g²), and
what the mean |g| of Michel et al. is taken over.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from .shrink import encoder_layers, head_size


@dataclass
class MaskGradients:
    """Per-example mask gradients, one [examples, units] tensor per layer."""

    heads: list  # list[Tensor [N, H_l]]
    ffn: list  # list[Tensor [N, I_l]]

    def mean_abs(self) -> tuple[list, list]:
        """Michel et al.'s importance: E_x |∂L/∂mask|, per layer."""
        return [g.abs().mean(0) for g in self.heads], [g.abs().mean(0) for g in self.ffn]

    def fisher_diagonal(self) -> tuple[list, list]:
        """Kwon et al.'s diagonal Fisher: Σ_x (∂L/∂mask)², per layer."""
        return [(g ** 2).sum(0) for g in self.heads], [(g ** 2).sum(0) for g in self.ffn]


@contextmanager
def unit_masks(model, heads: list, ffn: list):
    """Multiply each head's context and each FFN activation by `heads[l]` / `ffn[l]` (tensors [units] or
    [batch, units]; None: that layer unmasked) while the block runs."""
    size = head_size(model)
    handles = []

    def head_hook(mask):
        def hook(module, args):
            x = args[0]  # [batch, seq, heads * size]
            m = mask if mask.dim() == 2 else mask.unsqueeze(0)
            scaled = x.view(*x.shape[:-1], -1, size) * m[:, None, :, None].to(x.dtype)
            return (scaled.reshape(x.shape), *args[1:])
        return hook

    def ffn_hook(mask):
        def hook(module, args):
            m = mask if mask.dim() == 2 else mask.unsqueeze(0)
            return (args[0] * m[:, None, :].to(args[0].dtype), *args[1:])
        return hook

    try:
        for layer, hm, fm in zip(encoder_layers(model), heads, ffn):
            if hm is not None:
                handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(hm)))
            if fm is not None:
                handles.append(layer.output.dense.register_forward_pre_hook(ffn_hook(fm)))
        yield
    finally:
        for h in handles:
            h.remove()


def mask_gradients(model, batches) -> MaskGradients:
    """Each example's gradient of the task loss with respect to every head and FFN-neuron mask (at 1).

    `batches`: collated training batches with labels (the model computes its own task loss). The model's loss is
    a mean over the batch, and an example's masks touch only its own loss, so B · ∂mean/∂mask_i is example i's
    gradient. Weights are frozen meanwhile (only the masks need gradients) and restored after."""
    import torch

    layers = encoder_layers(model)
    size = head_size(model)
    widths = [(l.attention.self.query.out_features // size, l.intermediate.dense.out_features) for l in layers]
    dtype = next(model.parameters()).dtype
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in frozen:
        p.requires_grad_(False)
    head_g: list[list] = [[] for _ in layers]
    ffn_g: list[list] = [[] for _ in layers]
    try:
        for batch in batches:
            n = len(batch["input_ids"])
            hm = [torch.ones(n, h, dtype=dtype, requires_grad=True) for h, _ in widths]
            fm = [torch.ones(n, f, dtype=dtype, requires_grad=True) for _, f in widths]
            with unit_masks(model, hm, fm):
                loss = model(**batch).loss * n
            loss.backward()
            for i in range(len(layers)):
                head_g[i].append(hm[i].grad.detach())
                ffn_g[i].append(fm[i].grad.detach())
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return MaskGradients([torch.cat(g) for g in head_g], [torch.cat(g) for g in ffn_g])


def importance_batches(task, examples, tokenizer, label2id: dict, max_length: int, batch_size: int = 32) -> list:
    """Collated batches (with labels) of `examples`, in order: the same examples give the same scores."""
    feats = task.train_features(examples, tokenizer, label2id, max_length)
    collate = task.collator(tokenizer)
    return [dict(collate(feats[i:i + batch_size])) for i in range(0, len(feats), batch_size)]
