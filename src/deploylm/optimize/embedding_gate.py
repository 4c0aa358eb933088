"""The accuracy side of the gate for a sentence-embedding (feature-extraction) variant: there is no dev-set metric,
so the variant's embeddings are compared with its parent's on a real corpus, text by text, by cosine similarity.

- corpus: the `--data` dataset's dev texts (default: the sst2 alias, SST-2 dev, 872 real sentences), the first
  `--max-eval-samples` of them; both models embed the same padded batches. It is also static-int8's calibration
  data (its train split).
- verdict: refused when the mean cosine is below --min-cosine-mean or the worst text's is below --min-cosine.
  Min, mean, median and 1st percentile are recorded (manifest `gate.cosine`; min and mean in `metrics`). The
  parent is the reference: there is no noise band to subtract, as the fp32 parent agrees with itself exactly.
- parity: the usual random + real inputs, judged on max |d| only: argmax agreement over embedding dimensions
  means nothing, and a unit vector's top two components are never 2 x the int8 bound apart, so
  verify.check_parity would find no "decided" position to judge. The corpus cosine is the judgement.

Defaults, from the packaged all-MiniLM-L6-v2 over the 872 SST-2 dev sentences (benchmarks/results/embeddings.md):
dynamic-int8 (per-channel) measured min 0.966 / mean 0.992 and passes; static-int8 (QDQ, MinMax calibration)
min 0.830 / mean 0.932 and is refused; per-tensor int8 reached min 0.889 (ASSETS.md) and would be too.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError, ParityError

DEFAULT_CORPUS = "sst2"
# From measurement on the real MiniLM (module docstring): a margin below per-channel dynamic int8, above what
# per-tensor int8, static int8 or a broken graph gives.
DEFAULT_MIN_COSINE = 0.95
DEFAULT_MIN_COSINE_MEAN = 0.98
OUTPUT = "sentence_embedding"


def check_thresholds(min_cosine: float, min_cosine_mean: float) -> None:
    for flag, value in (("--min-cosine", min_cosine), ("--min-cosine-mean", min_cosine_mean)):
        if not -1.0 <= value <= 1.0:
            raise ConfigError(f"{flag} is a cosine similarity in [-1, 1], not {value}.")


def corpus(data: str | None, split: str, limit: int | None) -> tuple[str, str, list[str]]:
    """(source, dataset name, texts) of the corpus the cosine is measured on. Token lists (CoNLL) are joined
    with spaces; sentence pairs are refused (an embedder embeds one text)."""
    from ..data import load_dataset

    ds = load_dataset(data or DEFAULT_CORPUS)
    inputs = ds.split(split).inputs[:limit] if limit else ds.split(split).inputs
    texts = [" ".join(t) if isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t) else t
             for t in inputs]
    bad = [type(t).__name__ for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"Split '{split}' of {ds.source} holds {len(bad)} inputs that are not non-empty texts "
                        f"(e.g. {bad[0]}); the embedding gate embeds single texts. Pass --data with a text dataset.")
    return ds.source, ds.name, texts


def embed(runner, batches: list[dict]) -> np.ndarray:
    names = set(runner.input_names)
    return np.concatenate([runner.run({k: v for k, v in b.items() if k in names})[OUTPUT] for b in batches])


def cosines(parent: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64. The variant's norm is not trusted to be 1 (bf16/int8 graphs)."""
    a, b = parent.astype(np.float64), variant.astype(np.float64)
    if not np.isfinite(b).all():
        raise ParityError("The variant produced NaN/inf embeddings on the gate corpus; the transformation broke the "
                          "model. No artifact was written.")
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(denom, 1e-12)


def cosine_record(parent, parent_runner, variant_runner, tokenizer, gate) -> tuple[dict, list[str]]:
    """The gate record of an embedding variant (same keys as the dev-metric record, metric None, plus `cosine`)
    and the texts its speed is measured on."""
    from ..runtime.batching import length_batches, pad_batch
    from ..tasks import task_for

    source, name, texts = corpus(gate.data, gate.split, gate.max_eval_samples)
    feats, _ = task_for(parent).encode(texts, tokenizer, parent.max_length)
    names = tuple(dict.fromkeys(parent_runner.input_names + variant_runner.input_names))
    groups = list(length_batches(feats, gate.batch_size))
    order = [i for idx in groups for i in idx]  # row r of the stacked embeddings is text order[r]
    batches = [pad_batch([feats[i] for i in idx], tokenizer.pad_token_id or 0, names) for idx in groups]
    cos = cosines(embed(parent_runner, batches), embed(variant_runner, batches))
    worst = int(np.argmin(cos))
    stats = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6),
             "p01": round(float(np.percentile(cos, 1)), 6), "median": round(float(np.median(cos)), 6),
             "worst_text": texts[order[worst]][:200], "texts": len(texts),
             "min_allowed": gate.min_cosine, "mean_allowed": gate.min_cosine_mean}
    record = {"data": source, "split": gate.split, "samples": len(texts), "metric": None, "parent": {},
              "variant": {}, "metric_delta_points": 0.0, "dataset_name": name, "cosine": stats}
    return record, texts[: gate.bench_samples]


def cosine_metrics(record: dict) -> dict:
    """What the manifest's `metrics` holds for an embedding variant: its agreement with the parent."""
    c = record["cosine"]
    return {f"{record['dataset_name']}:{record['split']}": {
        "cosine_min": c["min"], "cosine_mean": c["mean"], "samples": record["samples"], "data": record["data"],
        "reference": "parent embeddings"}}


def cosine_problems(record: dict, gate) -> list[str]:
    c = record.get("cosine")
    if c is None:
        return []
    where = f"its parent's on {c['texts']} {record['split']} texts of {record['data']}"
    problems = []
    if c["mean"] < gate.min_cosine_mean:
        problems.append(f"its embeddings' mean cosine similarity to {where} is {c['mean']:.4f}, below "
                        f"--min-cosine-mean {gate.min_cosine_mean:g}")
    if c["min"] < gate.min_cosine:
        problems.append(f"its worst text's cosine similarity is {c['min']:.4f}, below --min-cosine "
                        f"{gate.min_cosine:g} (text: {c['worst_text']!r})")
    return problems


def embedding_parity(parent_runner, variant_runner, tokenizer, method: str, max_length: int, vocab_size: int,
                     tolerance: float | None = None, seed: int = 0) -> dict:
    """Random and real inputs through both runners (verify.compare), judged on max |d| of the embedding only."""
    from .verify import REAL_TEXTS, compare, random_batches, text_batches, tolerance_for

    tol = tolerance_for(method, tolerance)
    names = tuple(dict.fromkeys(parent_runner.input_names + variant_runner.input_names))
    rnd = compare(parent_runner, variant_runner,
                  random_batches(vocab_size, names, seed, max_len=min(48, max_length), cls_id=tokenizer.cls_token_id,
                                 sep_id=tokenizer.sep_token_id))
    real = compare(parent_runner, variant_runner, text_batches(REAL_TEXTS, tokenizer, names, max_length))
    worst = max(rnd["max_abs_diff"], real["max_abs_diff"])
    report = {"method": method, "tolerance": {"max_abs": tol.max_abs, "min_agreement": None},
              "judged_on": "max_abs_diff (embedding; the corpus cosine is the accuracy gate)",
              "random": rnd, "real": real, "passed": worst <= tol.max_abs}
    if not report["passed"]:
        raise ParityError(f"Parity check failed for {method}: max abs embedding difference {worst:.4g} (allowed "
                          f"{tol.max_abs:g}) on random and real inputs. No artifact was written. If you accept "
                          "that, pass a looser --parity-tolerance explicitly.")
    return report
