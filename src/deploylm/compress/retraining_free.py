"""Retraining-free pruning (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers").

1. Mask search: the loss increase of a mask m is estimated by ½ (1−m)ᵀ F (1−m), F the empirical Fisher of the
   mask gradients. With the diagonal of F, the best mask under a unit-count constraint keeps the units with the
   largest Fisher diagonal (ranked globally). Kwon et al. constrain FLOPs or latency and let the search trade heads
   for neurons; here the constraint is the counts --heads / --ffn ask for, so the search is that ranking.
2. Mask rearrangement: within each layer, with its number of kept units fixed by the search, the units removed
   are re-chosen against the layer's *full* Fisher block (the interactions the diagonal ignores), greedily: each
   step removes the unit that raises (1−m)ᵀ F_l (1−m) least, starting from the better of that and the diagonal
   choice, then swaps a removed and a kept unit while a swap lowers it (swap_search).
3. Mask tuning (mask_tuning.py): the kept units' mask values are fitted by least squares, layer by layer, so that
   the pruned layers reproduce the unpruned model's layer outputs, then folded into the weights.
"""

from __future__ import annotations

from .selection import choose_units


def layer_fisher(grads):
    """F_l = Σ_x g_x g_xᵀ for one layer's per-example mask gradients [N, units]."""
    g = grads.double()
    return g.T @ g


def _objective(fisher, removed: list[int]) -> float:
    if not removed:
        return 0.0
    return float(fisher[removed][:, removed].sum())


def greedy_removal(fisher, n_remove: int) -> list[int]:
    """The units to remove, chosen greedily on (1−m)ᵀ F (1−m): adding unit j to the removed set S costs
    F_jj + 2 Σ_{i∈S} F_ij, kept up to date in one vector."""
    import torch

    units = fisher.shape[0]
    cross = torch.zeros(units, dtype=fisher.dtype)
    diag = fisher.diagonal().clone()
    taken = torch.zeros(units, dtype=torch.bool)
    removed = []
    for _ in range(n_remove):
        cost = diag + 2 * cross
        cost[taken] = float("inf")
        j = int(torch.argmin(cost))
        removed.append(j)
        taken[j] = True
        cross += fisher[:, j]
    return removed


def swap_search(fisher, removed: list[int], max_swaps: int = 1000) -> list[int]:
    """Local search from `removed`: repeatedly make the swap (a removed unit back in, a kept one out) that lowers
    (1−m)ᵀ F (1−m) most, until none does. Greedy removal alone is myopic (it takes the smallest diagonal first even
    when two large units cancel each other); the swaps repair that at a fixed count."""
    import torch

    units = fisher.shape[0]
    out = torch.zeros(units, dtype=torch.bool)
    out[removed] = True
    diag = fisher.diagonal()
    for _ in range(max_swaps):
        gone, kept = out.nonzero().flatten(), (~out).nonzero().flatten()
        if len(gone) == 0 or len(kept) == 0:
            break
        cross = fisher[:, gone].sum(1)
        # objective change when i (removed) comes back and j (kept) goes
        delta = ((diag[gone] - 2 * cross[gone])[:, None] + (diag[kept] + 2 * cross[kept])[None, :]
                 - 2 * fisher[gone][:, kept])
        best = int(torch.argmin(delta))
        if float(delta.flatten()[best]) >= -1e-12 * max(1.0, float(diag.abs().max())):
            break
        i, j = gone[best // len(kept)], kept[best % len(kept)]
        out[i], out[j] = False, True
    return sorted(out.nonzero().flatten().tolist())


def rearrange(grads: list, kept: dict[int, list[int]]) -> tuple[dict[int, list[int]], dict]:
    """Per layer: the same number of units kept, re-chosen against the full Fisher block. Returns the new
    {layer: kept} and, per layer, the Fisher objective before/after (recorded in the manifest)."""
    out, record = {}, {}
    for l, keep in kept.items():
        units = grads[l].shape[1]
        n_remove = units - len(keep)
        if n_remove == 0:
            out[l] = keep
            continue
        fisher = layer_fisher(grads[l])
        diag_removed = sorted(set(range(units)) - set(keep))
        greedy = greedy_removal(fisher, n_remove)
        before, after = _objective(fisher, diag_removed), _objective(fisher, greedy)
        chosen = swap_search(fisher, greedy if after < before else diag_removed)
        out[l] = sorted(set(range(units)) - set(chosen))
        record[str(l)] = {"fisher_loss_diagonal": before, "fisher_loss_greedy": after,
                          "fisher_loss_rearranged": _objective(fisher, chosen)}
    return out, record


def search(grads, layers: list[int], heads: float | None, ffn: float | None):
    """(kept heads, kept neurons, record): Fisher-diagonal search then rearrangement, on MaskGradients."""
    head_diag, ffn_diag = grads.fisher_diagonal()
    kept_h = choose_units(head_diag, layers, heads, "heads", normalise=False)
    kept_f = choose_units(ffn_diag, layers, ffn, "ffn", normalise=False)
    kept_h, rec_h = rearrange(grads.heads, kept_h)
    kept_f, rec_f = rearrange(grads.ffn, kept_f)
    return kept_h, kept_f, {"rearrangement": {"heads": rec_h, "ffn": rec_f}}
