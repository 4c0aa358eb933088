"""`deploylm export` and `deploylm quantize`: each parses options and calls one library function."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _report_decoder(art, out) -> None:
    gate = art.manifest["gate"]
    ppl, greedy, speed = gate["perplexity"], gate["greedy"], gate["speed"]
    out.print(f"[green]{art.manifest['method']}[/] -> [bold]{art.path}[/]")
    out.print(f"  perplexity on {ppl['texts']} SQuAD dev contexts ({ppl['tokens']} tokens): {ppl['parent']:.3f} -> "
              f"{ppl['variant']:.3f} ({ppl['increase_percent']:+.2f} %); same next-token prediction at "
              f"{ppl['top1_agreement']:.1%} of positions")
    out.print(f"  greedy agreement on {greedy['prompts']} prompts x {greedy['new_tokens']} tokens: "
              f"{greedy['to_first_divergence']:.1%} up to the first divergence, {greedy['overall']:.1%} overall")
    out.print(f"  decode speed at batch 1: {speed['ratio_median']:.2f}x its parent (rounds {speed['ratio_min']:.2f}.."
              f"{speed['ratio_max']:.2f}x; {speed['variant_tokens_per_s']} vs {speed['parent_tokens_per_s']} tokens/s)")


def _report(art) -> None:
    from rich.console import Console

    out = Console()
    if art.manifest.get("gate", {}).get("kind") == "decoder":
        return _report_decoder(art, out)
    gate, parity = art.manifest["gate"], art.manifest["parity"]
    out.print(f"[green]{art.manifest['method']}[/] -> [bold]{art.path}[/]")
    worst = max(parity['random']['max_abs_diff'], parity['real']['max_abs_diff'])
    speed = (f"speed {gate['speed_ratio']:.2f}x its parent ({gate['speed']['variant_seq_per_s']} vs "
             f"{gate['speed']['parent_seq_per_s']} seq/s, batch {gate['speed']['batch_size']})")
    if "cosine" in gate:  # a sentence-embedding variant: judged by cosine similarity to its parent's embeddings
        c = gate["cosine"]
        out.print(f"  parity: max |d embedding| {worst:.3g}")
        out.print(f"  cosine to the parent on {c['texts']} {gate['split']} texts: min {c['min']:.4f}, mean "
                  f"{c['mean']:.4f} (allowed {c['min_allowed']:g} / {c['mean_allowed']:g}); {speed}")
        return
    out.print(f"  parity: max |dlogit| {worst:.3g}, "
              f"argmax agreement {min(parity['random']['argmax_agreement'], parity['real']['argmax_agreement']):.1%}")
    m = gate["metric"]
    if m is None:  # a task without a dev metric (sentence embeddings): parity and speed are the gate
        out.print(f"  no dev-set metric for {art.task}; {speed}")
        return
    out.print(f"  {m} on {gate['samples']} {gate['split']} examples: {gate['parent'][m]:.4f} -> {gate['variant'][m]:.4f} "
              f"({gate['metric_delta_points']:+.2f} pt); {speed}")


ALL_TOKENS_HELP = ("classification: export the last layer for every token (default: only the first token, "
                   "the one the head reads; exact and faster)")
DATA_HELP = "dataset for the dev-set gate (and calibration); default: the one the artifact was fine-tuned on"


def _stage_config(cls, config: Path | None, flags: dict):
    """The stage's config: the --config file's values, then every flag given (flags win); defaults are the
    config class's own, defined once in optimize/stages.py."""
    from ..config import load_config

    no_fusion = flags.get("optimize") == "none"
    cfg = load_config(cls, config, **{**flags, "optimize": None} if no_fusion else flags)
    return cfg.model_copy(update={"optimize": None}) if no_fusion else cfg


CONFIG_HELP = "YAML/JSON file with this stage's options (a manifest's `config` reproduces its run); flags win"


def register(app: typer.Typer) -> None:
    @app.command()
    def quantize(
        artifact: Path,
        output: Path = typer.Option(..., help="artifact directory to create"),
        method: Optional[str] = typer.Option(None, help="encoders: dynamic-int8 | static-int8 | bf16; decoders: "
                                                        "weight-int8 | bf16 (default dynamic-int8)"),
        config: Optional[Path] = typer.Option(None, help=CONFIG_HELP),
        backend: Optional[str] = typer.Option(None, help="onnxruntime (int8) | torch (bf16); default per method"),
        data: Optional[str] = typer.Option(None, "--data", "--calibration-data", help=DATA_HELP),
        calibration_samples: Optional[int] = typer.Option(None, help="static-int8: training examples to calibrate "
                                                                      "on (default 200)"),
        max_metric_drop: Optional[float] = typer.Option(None, help="refuse if the dev metric drops more (points; "
                                                                    "default 1)"),
        allow_metric_drop: Optional[bool] = typer.Option(None, "--allow-metric-drop/--no-allow-metric-drop",
                                                         help="keep the variant even if the metric drops more"),
        allow_slower: Optional[bool] = typer.Option(None, "--allow-slower/--no-allow-slower",
                                                    help="keep the variant even if slower than its parent"),
        max_eval_samples: Optional[int] = typer.Option(None, help="gate on the first N dev examples only"),
        parity_tolerance: Optional[float] = typer.Option(None, help="looser max |dlogit| than the method's default"),
        all_tokens_last_layer: Optional[bool] = typer.Option(None, "--all-tokens-last-layer/--first-token-only",
                                                             help=ALL_TOKENS_HELP),
        max_ppl_increase: Optional[float] = typer.Option(None, help="decoders: refuse if perplexity rises more, in "
                                                                     "percent of the parent's (default 2 = 2 %)"),
        allow_ppl_increase: Optional[bool] = typer.Option(None, "--allow-ppl-increase/--no-allow-ppl-increase",
                                                          help="decoders: keep the variant even if perplexity rises"),
        ppl_texts: Optional[int] = typer.Option(None, help="decoders: SQuAD dev contexts to measure perplexity on "
                                                          "(default 16; --data: a SQuAD-format JSON file)"),
        min_cosine: Optional[float] = typer.Option(None, help="embeddings: refuse if any corpus text's cosine "
                                                             "similarity to the parent is lower (default 0.95)"),
        min_cosine_mean: Optional[float] = typer.Option(None, help="embeddings: refuse if the mean cosine over the "
                                                                  "corpus (--data, default sst2 dev) is lower "
                                                                  "(default 0.98)"),
        overwrite: bool = typer.Option(False),
    ) -> None:
        """Quantised variant of ARTIFACT, parity-checked, evaluated and benchmarked against it (the gate)."""
        from ..artifacts import Artifact
        from .stages import QuantizeConfig, _quantize

        cfg = _stage_config(QuantizeConfig, config, dict(
            method=method, backend=backend, data=data, calibration_samples=calibration_samples,
            max_metric_drop=max_metric_drop, allow_metric_drop=allow_metric_drop, allow_slower=allow_slower,
            max_eval_samples=max_eval_samples, parity_tolerance=parity_tolerance,
            all_tokens_last_layer=all_tokens_last_layer, max_ppl_increase=max_ppl_increase,
            allow_ppl_increase=allow_ppl_increase, ppl_texts=ppl_texts, min_cosine=min_cosine,
            min_cosine_mean=min_cosine_mean))
        _report(_quantize(Artifact.open(artifact), cfg, output, overwrite))

    @app.command()
    def export(
        artifact: Path,
        output: Path = typer.Option(..., help="artifact directory to create"),
        config: Optional[Path] = typer.Option(None, help=CONFIG_HELP),
        format: Optional[str] = typer.Option(None, "--format", help="onnx"),
        optimize: Optional[str] = typer.Option(None, help="O1 clean-up | O2 transformer fusions (default) | "
                                                          "O3 O2 + GELU approx | none"),
        data: Optional[str] = typer.Option(None, help=DATA_HELP),
        max_metric_drop: Optional[float] = typer.Option(None),
        allow_metric_drop: Optional[bool] = typer.Option(None, "--allow-metric-drop/--no-allow-metric-drop"),
        allow_slower: Optional[bool] = typer.Option(None, "--allow-slower/--no-allow-slower"),
        max_eval_samples: Optional[int] = typer.Option(None),
        parity_tolerance: Optional[float] = typer.Option(None),
        all_tokens_last_layer: Optional[bool] = typer.Option(None, "--all-tokens-last-layer/--first-token-only",
                                                             help=ALL_TOKENS_HELP),
        overwrite: bool = typer.Option(False),
    ) -> None:
        """ONNX export of ARTIFACT (dynamic batch/sequence axes), fused by onnxruntime (O2 unless told); gated."""
        from ..artifacts import Artifact
        from .stages import ExportConfig, _export

        cfg = _stage_config(ExportConfig, config, dict(
            format=format, optimize=optimize, data=data, max_metric_drop=max_metric_drop,
            allow_metric_drop=allow_metric_drop, allow_slower=allow_slower, max_eval_samples=max_eval_samples,
            parity_tolerance=parity_tolerance, all_tokens_last_layer=all_tokens_last_layer))
        _report(_export(Artifact.open(artifact), cfg, output, overwrite))
