"""Where each artifact's task metric comes from: the manifests' recorded dev metric when every artifact was
measured on the same data, split and sample count (then the numbers are comparable as they stand), otherwise
(or with --data) a fresh evaluation of each on one dataset through evaluation.py."""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import Artifact
from ..errors import ConfigError


@dataclass(frozen=True)
class MetricPlan:
    source: str  # "recorded" | "evaluated"
    data: str  # dataset dir/alias: the metric's data, and the one whose real lengths are timed
    split: str
    why: str
    samples: int | None = None  # recorded: the sample count all the recorded figures share


def recorded(art: Artifact, metric: str) -> dict[tuple, float]:
    """(data source, split, samples) -> value of `metric`, for each metric the manifest records."""
    out = {}
    for key, rec in art.metrics.items():
        if isinstance(rec, dict) and metric in rec and rec.get("data"):
            out[(rec["data"], key.rpartition(":")[2], rec.get("samples"))] = rec[metric]
    return out


def plan_metric(arts: list[Artifact], metric: str, data: str | None, split: str = "dev") -> MetricPlan:
    if data:
        return MetricPlan("evaluated", data, split, f"--data given: every artifact evaluated on {data}:{split}")
    keys = [set(recorded(a, metric)) for a in arts]
    common = set.intersection(*keys)
    if common:
        # the dev split first; then the figure on the most samples
        src, split_, samples = max(common, key=lambda k: (k[1] == split, k[2] or 0, k[0]))
        return MetricPlan("recorded", src, split_, f"recorded in every manifest on {src}:{split_} "
                          f"({samples} samples)", samples)
    # evaluate on a dataset every artifact was measured on (or the only one any was)
    per_art = [{k[0] for k in ks} for ks in keys]
    shared = sorted(set.intersection(*per_art))
    sources = sorted(set.union(*per_art))
    if shared or len(sources) == 1:
        src = (shared or sources)[0]
        unmeasured = [a.name for a, ks in zip(arts, keys) if not ks]
        detail = f"none recorded for {', '.join(unmeasured)}" if unmeasured else "their splits or sample counts differ"
        return MetricPlan("evaluated", src, split,
                          f"not every artifact recorded {metric} on the same data, split and samples ({detail}): "
                          f"every artifact evaluated on {src}:{split}")
    found = ", ".join(sources) or "none"
    raise ConfigError(f"The artifacts' recorded {metric} figures are not on one common dataset (recorded on: {found}), "
                      f"so they cannot be compared as they stand. Pass --data DATA (a dataset dir or alias such as "
                      f"sst2) to evaluate every artifact on its {split} split.")


def evaluate_all(arts: list[Artifact], plan: MetricPlan, metric: str) -> list[dict]:
    """{"value", "samples"} per artifact, recorded from the manifests or evaluated now (evaluation.evaluate, which
    also records the figure in each manifest, as `deploylm eval` does)."""
    if plan.source == "recorded":
        return [{"value": recorded(a, metric)[(plan.data, plan.split, plan.samples)], "samples": plan.samples}
                for a in arts]
    from ..config import EvalConfig
    from ..evaluation import evaluate

    cfg = EvalConfig(data=plan.data, eval_split=plan.split)
    out = []
    for art in arts:
        rec = evaluate(art, cfg)
        out.append({"value": rec[metric], "samples": rec["samples"]})
    return out
