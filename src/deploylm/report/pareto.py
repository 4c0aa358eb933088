"""The Pareto front of (metric, throughput), both maximised."""

from __future__ import annotations

from typing import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is at least as good as b on both figures and strictly better on one."""
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For each (metric, throughput) point: is it on the front (no other point dominates it)? Two equal points
    do not dominate each other, so duplicates on the front are both kept: the user sees both choices."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]
