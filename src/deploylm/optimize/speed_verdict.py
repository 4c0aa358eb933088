"""When a variant counts as slower than its parent: one rule for every gate (encoder and decoder).

Rounds alternate the order (ABBA), so a neighbour's slow phase hits both sides of a round; each round gives one
ratio, variant speed / parent speed. The verdict "slower" needs every round to say so. With n rounds, if the two
were equally fast each round would favour either side with probability 1/2, so all n below 1.0 by chance has
probability 0.5**n (3 % at the default 5 rounds): equivalently, the distribution-free confidence interval of the
median ratio spanned by the smallest and largest round ratio, at confidence 1 - 2 * 0.5**n, lies wholly below 1.0.
No noise-band constant has to be tuned to a machine, and a host whose throughput spreads 20 % between runs does
not refuse a variant that is as fast as its parent.
"""

from __future__ import annotations

import statistics

RULE = "slower only if every round's ratio (variant / parent speed, rounds in alternating order) is below 1.0"


def is_slower(speed: dict) -> bool:
    """The verdict on a recorded speed comparison (a `summarise` dict, or any with `ratio_max`)."""
    return speed["ratio_max"] < 1.0


def summarise(ratios: list[float]) -> dict:
    """What the manifest records about the speed comparison, the verdict included."""
    if not ratios:
        raise ValueError("a speed verdict needs at least one round")
    n = len(ratios)
    out = {"rounds": n, "ratios": [round(r, 3) for r in ratios], "ratio_median": round(statistics.median(ratios), 3),
           "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
           "interval": [round(min(ratios), 3), round(max(ratios), 3)],
           "interval_confidence": round(1 - 2 * 0.5 ** n, 4), "rule": RULE}
    return {**out, "slower": is_slower({"ratio_max": max(ratios)})}
