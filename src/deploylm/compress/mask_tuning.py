"""Layer-wise mask tuning by least squares (Kwon et al. 2022, §4.3), then folded into the weights.

With the pruning masks fixed, each kept head's / neuron's mask becomes a real number fitted, sublayer by
sublayer from the bottom, so that the pruned model's pre-LayerNorm sum x' + Σ_u m_u P_u(x') reproduces the
unpruned model's x + f(x) on the same examples (x: the unpruned model's sublayer input, x': the pruned one's,
P_u: unit u's contribution through the output projection). That is a linear least-squares problem in m, solved by
its normal equations with a little ridge damping. A mask only scales the input columns of the output projection
(attention.output.dense, output.dense), so the fitted values are multiplied into those columns: the artifact is a
plain (shrunk) model with no masks left.
"""

from __future__ import annotations

from contextlib import contextmanager

from .importance import unit_masks
from .shrink import encoder_layers, head_size

DAMPING = 1e-4  # of the mean diagonal of AᵀA: keeps the solve stable where contributions are nearly collinear


@contextmanager
def _capture(modules: dict):
    """Record the first positional input of each module in `modules` (name -> module) on every forward."""
    seen: dict = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, args[0].detach()))
               for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _forward(model, batch, head_masks=None, ffn_masks=None):
    import torch

    feeds = {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
    with torch.no_grad():
        if head_masks is None:
            model(**feeds)
        else:
            with unit_masks(model, head_masks, ffn_masks):
                model(**feeds)


def _normal_equations(contrib, residual):
    """AᵀA, Aᵀr for A's columns = unit contributions [units, tokens, hidden], r = [tokens, hidden]."""
    flat = contrib.reshape(contrib.shape[0], -1).double()
    return flat @ flat.T, flat @ residual.reshape(-1).double()


def _sublayer_system(model, batches, layer_i, kind, head_masks, ffn_masks, kept):
    """Accumulated normal equations of one sublayer ('attention' or 'ffn') of layer `layer_i`."""
    import torch

    layer = encoder_layers(model)[layer_i]
    size = head_size(model)
    if kind == "attention":
        mods = {"x": layer.attention.self.query, "u": layer.attention.output.dense}
    else:
        mods = {"x": layer.intermediate.dense, "u": layer.output.dense}
    weight = mods["u"].weight.detach()
    idx = torch.tensor(kept)
    ata = aty = None
    for batch in batches:
        with _capture(mods) as t:
            _forward(model, batch)
        with _capture(mods) as s:
            _forward(model, batch, head_masks, ffn_masks)
        tokens = batch["attention_mask"].reshape(-1).bool()
        target = t["x"] + t["u"] @ weight.T  # x + W·u (the bias cancels against the student's)
        residual = (target - s["x"]).reshape(-1, weight.shape[0])[tokens]
        u = s["u"].reshape(-1, s["u"].shape[-1])[tokens]
        if kind == "attention":  # head h's contribution: its context through its block of W_O's columns
            ctx = u.view(len(u), -1, size)[:, idx]  # [tokens, kept, size]
            w = weight.view(weight.shape[0], -1, size)[:, idx]  # [hidden, kept, size]
            a, b = _normal_equations(torch.einsum("tks,hks->kth", ctx, w), residual)
        else:  # neuron j's contribution is x_tj · w_j: AᵀA = (XᵀX) ⊙ (WᵀW), no [kept, tokens, hidden] tensor
            x, w = u[:, idx].double(), weight[:, idx].double()
            a, b = (x.T @ x) * (w.T @ w), ((residual.double() @ w) * x).sum(0)
        ata, aty = (a, b) if ata is None else (ata + a, aty + b)
    return ata, aty


def _solve(ata, aty):
    import torch

    damp = DAMPING * float(ata.diagonal().mean()) if ata.numel() else 0.0
    return torch.linalg.solve(ata + damp * torch.eye(len(ata), dtype=ata.dtype), aty).float()


def tune_masks(model, batches, layers: list[int], kept_heads: dict, kept_ffn: dict) -> dict:
    """Fit the kept units' masks, fold them into the output projections of `model` (still unshrunk); returns
    per layer the fitted masks' range for the manifest."""
    import torch

    all_layers = encoder_layers(model)
    size = head_size(model)
    head_masks = [torch.zeros(l.attention.self.query.out_features // size) for l in all_layers]
    ffn_masks = [torch.zeros(l.intermediate.dense.out_features) for l in all_layers]
    for i in layers:  # dropped layers keep zero masks; they are removed afterwards
        head_masks[i][kept_heads[i]] = 1.0
        ffn_masks[i][kept_ffn[i]] = 1.0
    dropped = [i for i in range(len(all_layers)) if i not in layers]
    if dropped:  # a removed layer is skipped entirely, which masks cannot express; tune what masks can
        return {"skipped": f"mask tuning needs every layer kept (--layers removes {dropped})"}
    record = {}
    for i in layers:
        for kind, masks, kept in (("attention", head_masks, kept_heads[i]), ("ffn", ffn_masks, kept_ffn[i])):
            m = _solve(*_sublayer_system(model, batches, i, kind, head_masks, ffn_masks, kept))
            masks[i][kept] = m
            record[f"{i}.{kind}"] = {"min": round(float(m.min()), 4), "max": round(float(m.max()), 4)}
    _fold(model, head_masks, ffn_masks, size)
    return record


def _fold(model, head_masks, ffn_masks, size: int) -> None:
    import torch

    with torch.no_grad():
        for layer, hm, fm in zip(encoder_layers(model), head_masks, ffn_masks):
            layer.attention.output.dense.weight.mul_(hm.repeat_interleave(size)[None, :])
            layer.output.dense.weight.mul_(fm[None, :])
