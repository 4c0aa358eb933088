"""`deploylm prune`: parses options and calls compress/prune.py; also registers the `prune` pipeline stage."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..stages import Stage, register_stage


def _prune_stage(parent, cfg, output: Path, overwrite: bool, resume: bool = False):
    from .prune import prune

    return prune(parent, cfg, output, overwrite=overwrite, resume=resume)


def _register_stage() -> None:
    from ..config import PruneConfig

    register_stage(Stage("prune", PruneConfig, _prune_stage))


_register_stage()


def _show(art) -> None:
    from rich.console import Console

    out = Console()
    rec = art.manifest["pruning"]
    out.print(f"[green]pruned[/] ({rec['method']}) -> [bold]{art.path}[/]  loads with: {rec['loads_with']}")
    before, after = rec["params_before"], rec["params_after"]
    out.print(f"  parameters: {before:,} -> {after:,} ({after / before:.1%})")
    if rec["method"] == "structured":
        shapes = ", ".join(f"{s['heads']}h/{s['ffn']}" for s in rec["shapes"])
        out.print(f"  layers kept {rec['layers_kept']}; heads/FFN width per layer: {shapes}")
    else:
        w = rec["weights_file"]
        before_c = w["before"]["compressed_bytes"] if w["before"] else None
        out.print(f"  sparsity {rec.get('sparsity', 0):.1%} of encoder Linear weights; compressed weights "
                  f"{before_c or '?'} -> {w['after']['compressed_bytes']} bytes ({w['after']['compression']}); "
                  "dense kernels run no faster")
    for stage, m in rec["dev_metrics"].items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        out.print(f"  dev {stage}: {shown}")


def register(app: typer.Typer) -> None:
    @app.command()
    def prune(
        artifact: Path,
        output: Path = typer.Option(..., help="artifact directory to create"),
        data: Optional[str] = typer.Option(None, help="task data (importance, recovery, dev metric); default: the "
                                                      "artifact's own"),
        heads: Optional[float] = typer.Option(None, help="fraction of all attention heads removed, in [0, 1)"),
        ffn: Optional[float] = typer.Option(None, help="fraction of all FFN neurons removed, in [0, 1)"),
        layers: Optional[int] = typer.Option(None, help="whole encoder layers removed (the least important)"),
        unstructured: Optional[float] = typer.Option(None, help="fraction of encoder Linear weights zeroed by "
                                                                "magnitude (dense: no faster)"),
        mode: Optional[str] = typer.Option(None, help="recover (default) | retraining-free (Kwon et al. 2022)"),
        mask_tuning: Optional[bool] = typer.Option(None, "--mask-tuning/--no-mask-tuning",
                                                   help="retraining-free: least-squares mask tuning (default on)"),
        importance_samples: Optional[int] = typer.Option(None, help="training examples importance is measured on "
                                                                    "(default 256; retraining-free 2048)"),
        recover_epochs: Optional[float] = typer.Option(None, help="recovery fine-tune epochs (default 0: none)"),
        distill_from_parent: Optional[bool] = typer.Option(None, "--distill-from-parent/--no-distill-from-parent",
                                                           help="recovery distils from the unpruned parent"),
        config: Optional[Path] = typer.Option(None, help="YAML/JSON file with prune options (flags win)"),
        max_train_samples: Optional[int] = typer.Option(None),
        max_eval_samples: Optional[int] = typer.Option(None),
        learning_rate: Optional[float] = typer.Option(None),
        batch_size: Optional[int] = typer.Option(None),
        max_length: Optional[int] = typer.Option(None),
        seed: Optional[int] = typer.Option(None),
        overwrite: bool = typer.Option(False, help="replace an existing output directory"),
        resume: bool = typer.Option(False, help="continue an interrupted recovery from its last checkpoint"),
    ) -> None:
        """Prune ARTIFACT: heads / FFN neurons / layers removed physically by importance on task data (optional
        recovery fine-tune), or unstructured magnitude pruning; writes an artifact with its dev metric."""
        from ..config import PruneConfig, load_config
        from .prune import prune as run

        cfg = load_config(PruneConfig, config, data=data, heads=heads, ffn=ffn, layers=layers,
                          unstructured=unstructured, mode=mode, mask_tuning=mask_tuning,
                          importance_samples=importance_samples, recover_epochs=recover_epochs,
                          distill_from_parent=distill_from_parent, max_train_samples=max_train_samples,
                          max_eval_samples=max_eval_samples, learning_rate=learning_rate, batch_size=batch_size,
                          max_length=max_length, seed=seed)
        _show(run(artifact, cfg, output, overwrite=overwrite, resume=resume))
