"""`deploylm distill`: parses options and calls compress.distill.distill."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def distill(
        teacher: Optional[Path] = typer.Option(None, help="teacher artifact (fine-tuned, transformers format)"),
        student: Optional[str] = typer.Option(None, help="student: alias (minilm-l6), HF directory or artifact"),
        student_layers: Optional[int] = typer.Option(None, help="student = N of the teacher's layers, uniformly "
                                                                "spaced, initialised from its weights"),
        data: Optional[str] = typer.Option(None, help="labelled dataset: directory, alias (sst2, ...) or hf:NAME"),
        output: Path = typer.Option(..., help="artifact directory to create"),
        temperature: Optional[float] = typer.Option(None, help="softmax temperature of the soft targets (default 2)"),
        alpha: Optional[float] = typer.Option(None, help="weight of the soft term, 1 - alpha the hard (default 0.5)"),
        hidden_loss: bool = typer.Option(False, "--hidden-loss", help="also MSE of hidden states vs the mapped "
                                                                      "teacher layers (same tokenizer and width)"),
        attention_loss: bool = typer.Option(False, "--attention-loss", help="also KL of attention distributions "
                                                                            "(same tokenizer and head count)"),
        extra_text: Optional[str] = typer.Option(None, help="unlabelled text the teacher labels: FILE (one text a "
                                                            "line) or DATA[:SPLIT], e.g. sst2:test"),
        max_extra_samples: Optional[int] = typer.Option(None, help="use N rows of --extra-text (seeded sample)"),
        config: Optional[Path] = typer.Option(None, help="YAML/JSON file with distill options (flags win)"),
        max_train_samples: Optional[int] = typer.Option(None),
        max_eval_samples: Optional[int] = typer.Option(None),
        epochs: Optional[float] = typer.Option(None),
        learning_rate: Optional[float] = typer.Option(None),
        batch_size: Optional[int] = typer.Option(None),
        max_length: Optional[int] = typer.Option(None),
        seed: Optional[int] = typer.Option(None),
        text_column: Optional[str] = typer.Option(None),
        label_column: Optional[str] = typer.Option(None),
        eval_split: Optional[str] = typer.Option(None),
        overwrite: bool = typer.Option(False, help="replace an existing output directory"),
        resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
    ) -> None:
        """Distil a teacher artifact into a smaller student; writes an artifact with the student's dev metric."""
        from rich.console import Console

        from ..cli import _print_metrics
        from ..config import DistillConfig, load_config
        from .distill import distill as run

        cfg = load_config(DistillConfig, config, teacher=str(teacher.resolve()) if teacher else None, student=student,
                          student_layers=student_layers, data=data, temperature=temperature, alpha=alpha,
                          hidden_loss=hidden_loss or None, attention_loss=attention_loss or None,
                          extra_text=extra_text, max_extra_samples=max_extra_samples,
                          max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, epochs=epochs,
                          learning_rate=learning_rate, batch_size=batch_size, max_length=max_length, seed=seed,
                          text_column=text_column, label_column=label_column, eval_split=eval_split)
        art = run(cfg, output, overwrite=overwrite, resume=resume)
        out = Console()
        init = art.manifest["distillation"]
        made = (f"{cfg.student_layers} of the teacher's layers {init['layers_kept']}" if cfg.student_layers
                else cfg.student)
        out.print(f"[green]distilled[/] {cfg.teacher} into {made} -> [bold]{art.path}[/]")
        _print_metrics(art.metrics)
