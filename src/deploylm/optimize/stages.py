"""Pipeline stages `export` and `quantize` (same options as the CLI commands), e.g.

    - export: {optimize: O2, data: sst2}
    - quantize: {method: dynamic-int8, data: sst2}
    - quantize: {method: weight-int8, max_ppl_increase: 2}   # a text-generation artifact
    - bench: {data: sst2}          # the artifact vs its PyTorch source: table + plot beside it
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import StageConfig
from ..stages import Stage, register_stage
from .embedding_gate import DEFAULT_MIN_COSINE, DEFAULT_MIN_COSINE_MEAN


class GateFields(StageConfig):
    data: str | None = Field(default=None, description="dev/calibration dataset; default: the parent's")
    max_metric_drop: float = Field(default=1.0, ge=0)
    allow_metric_drop: bool = False
    allow_slower: bool = False
    max_eval_samples: int | None = Field(default=None, gt=0)
    parity_tolerance: float | None = Field(default=None, gt=0)
    all_tokens_last_layer: bool = Field(default=False, description="classification: last layer on every token")

    def gate(self):
        from .gate import GateOptions

        return GateOptions(data=self.data, max_metric_drop=self.max_metric_drop,
                           allow_metric_drop=self.allow_metric_drop, allow_slower=self.allow_slower,
                           max_eval_samples=self.max_eval_samples)


class ExportConfig(GateFields):
    format: Literal["onnx"] = "onnx"
    optimize: Literal["O1", "O2", "O3"] | None = "O2"


class QuantizeConfig(GateFields):
    # A string checked by the quantizer itself, whose error lists the methods valid for the artifact's kind.
    method: str = Field(default="dynamic-int8", description="dynamic-int8 | static-int8 | bf16 | weight-int8")
    backend: Literal["onnxruntime", "torch"] | None = None
    calibration_samples: int = Field(default=200, gt=0, description="static-int8: training examples to calibrate on")
    # decoders (text-generation artifacts): perplexity side of their gate
    max_ppl_increase: float = Field(default=2.0, ge=0, description="percent of the parent's perplexity (2 = 2 %)")
    allow_ppl_increase: bool = False
    ppl_texts: int | None = Field(default=None, gt=0, description="SQuAD dev contexts for perplexity; default 16")
    # sentence embeddings (feature-extraction artifacts): cosine similarity to the parent over the --data corpus
    min_cosine: float = Field(default=DEFAULT_MIN_COSINE, ge=-1, le=1, description="refuse if any text's is lower")
    min_cosine_mean: float = Field(default=DEFAULT_MIN_COSINE_MEAN, ge=-1, le=1,
                                   description="refuse if the corpus mean is lower")

    def gate(self):
        from dataclasses import replace

        return replace(super().gate(), min_cosine=self.min_cosine, min_cosine_mean=self.min_cosine_mean)

    def decoder_gate(self):
        from .decoder_gate import DecoderGateOptions

        texts = {"ppl_texts": self.ppl_texts} if self.ppl_texts else {}
        return DecoderGateOptions(data=self.data, max_ppl_increase=self.max_ppl_increase,
                                  allow_ppl_increase=self.allow_ppl_increase, allow_slower=self.allow_slower, **texts)


class BenchConfig(StageConfig):
    data: str | None = Field(default=None, description="dataset whose dev split is measured; default: the parent's")
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1)
    seq_len: list[str] = Field(default=["real"], min_length=1)
    rounds: int = Field(default=1, gt=0)

    def plan(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """(batch sizes, sequence settings), checked as the CLI flags are: a --config file goes through it too."""
        from ..bench.run import parse_batch_sizes, parse_seqs

        return parse_batch_sizes(",".join(map(str, self.batch_sizes))), parse_seqs(",".join(self.seq_len))


def gate_fields(gate) -> dict:
    """The stage-config fields of a GateOptions (what `--config` and the manifest's `config` hold)."""
    if gate is None:
        return {}
    return {"data": gate.data, "max_metric_drop": gate.max_metric_drop, "allow_metric_drop": gate.allow_metric_drop,
            "allow_slower": gate.allow_slower, "max_eval_samples": gate.max_eval_samples}


def cosine_fields(gate) -> dict:
    """QuantizeConfig's embedding-gate fields of a GateOptions."""
    return {} if gate is None else {"min_cosine": gate.min_cosine, "min_cosine_mean": gate.min_cosine_mean}


def decoder_gate_fields(gate) -> dict:
    if gate is None:
        return {}
    return {"data": gate.data, "max_ppl_increase": gate.max_ppl_increase,
            "allow_ppl_increase": gate.allow_ppl_increase, "allow_slower": gate.allow_slower,
            "ppl_texts": gate.ppl_texts}


def recorded_config(cls: type[StageConfig], **values) -> dict:
    """What a stage records as its manifest's `config`: exactly a valid `cls`, so that the file fed back to
    `--config` (or a pipeline step) reproduces the run; validated here, so a stage cannot record a config that
    would be refused."""
    return cls(**{k: v for k, v in values.items() if v is not None}).model_dump(mode="json")


def _export(parent, cfg: ExportConfig, output: Path, overwrite: bool):
    from .export_onnx import export

    return export(parent, output, fmt=cfg.format, optimize=cfg.optimize, gate=cfg.gate(),
                  parity_tolerance=cfg.parity_tolerance, all_tokens_last_layer=cfg.all_tokens_last_layer,
                  overwrite=overwrite)


def _quantize(parent, cfg: QuantizeConfig, output: Path, overwrite: bool):
    from .quantize import quantize

    return quantize(parent, output, cfg.method, backend=cfg.backend, gate=cfg.gate(),
                    calibration_samples=cfg.calibration_samples, parity_tolerance=cfg.parity_tolerance,
                    all_tokens_last_layer=cfg.all_tokens_last_layer, overwrite=overwrite,
                    decoder_gate=cfg.decoder_gate())


def _bench(parent, cfg: BenchConfig, output: Path, overwrite: bool):
    """Measure the artifact next to its PyTorch source; figures go into both manifests."""
    from rich.console import Console

    from ..bench import report
    from ..bench.run import bench
    from .common import root_transformers_parent, task_data

    sizes, seqs = cfg.plan()
    source = root_transformers_parent(parent)
    arts = [source] + ([parent] if parent.path.resolve() != source.path.resolve() else [])
    results = bench(arts, task_data(parent, cfg.data), sizes, seqs, rounds=cfg.rounds,
                    config=cfg.model_dump(mode="json"))
    Console(stderr=True).print(report.table(results, seqs, sizes))
    report.plot(results, parent.path.parent / f"bench-{parent.name}.png", seqs[0], max(sizes))
    return parent


register_stage(Stage("export", ExportConfig, _export))
register_stage(Stage("quantize", QuantizeConfig, _quantize))
register_stage(Stage("bench", BenchConfig, _bench, makes_artifact=False))
