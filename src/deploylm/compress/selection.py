"""Which layers, heads and FFN neurons to keep, from per-unit importance scores.

Choices (the issue leaves them open):
- --heads / --ffn are fractions of the heads / neurons of the layers that remain after --layers, ranked globally
  across those layers; each layer's scores are first divided by their L2 norm (Michel et al. 2019, §4.1: raw
  scores differ in scale from layer to layer, which would empty some layers first) unless `normalise=False`.
- A layer never loses its last head or neuron: such a unit is skipped and the next least important one elsewhere
  is removed instead, so the totals are exactly what the options say. A fraction that cannot be met while every
  layer keeps one unit is a ConfigError.
- --layers N removes the N layers whose heads and neurons together matter least (sum of raw scores).
"""

from __future__ import annotations

from ..errors import ConfigError


def removal_count(fraction: float | None, total: int) -> int:
    return 0 if not fraction else int(round(fraction * total))


def choose_layers(head_scores: list, ffn_scores: list, drop: int | None) -> list[int]:
    """Indices of the layers kept (in order) when `drop` whole layers go."""
    n = len(head_scores)
    if not drop:
        return list(range(n))
    if drop >= n:
        raise ConfigError(f"--layers {drop} would remove every layer of a {n}-layer encoder; pass at most {n - 1}.")
    score = [float(h.sum()) + float(f.sum()) for h, f in zip(head_scores, ffn_scores)]
    gone = set(sorted(range(n), key=lambda i: (score[i], i))[:drop])
    return [i for i in range(n) if i not in gone]


def choose_units(scores: list, layers: list[int], fraction: float | None, what: str,
                 normalise: bool = True) -> dict[int, list[int]]:
    """{layer: unit indices kept} for the layers in `layers`, removing `fraction` of their units globally."""
    total = sum(len(scores[l]) for l in layers)
    remove = removal_count(fraction, total)
    if remove > total - len(layers):
        raise ConfigError(f"--{what} {fraction} removes {remove} of {total} {what} units, which would leave some "
                          f"layer without any; every layer keeps at least one, so remove at most "
                          f"{(total - len(layers)) / total:.3f} of them (or drop whole layers with --layers).")
    ranked = []
    for l in layers:
        s = scores[l].double()
        if normalise:
            norm = float(s.norm())
            s = s / norm if norm > 0 else s
        ranked += [(float(v), l, i) for i, v in enumerate(s.tolist())]
    ranked.sort()  # least important first; ties broken by (layer, index): deterministic
    kept = {l: set(range(len(scores[l]))) for l in layers}
    for _, l, i in ranked:
        if remove == 0:
            break
        if len(kept[l]) > 1:
            kept[l].discard(i)
            remove -= 1
    return {l: sorted(k) for l, k in kept.items()}
