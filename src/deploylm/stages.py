"""Stage registry: name -> (config type, handler). A new stage registers here; the pipeline
runner and the manifest need no other change.

handler(parent: Artifact | None, cfg, output: Path, overwrite: bool) -> Artifact
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .artifacts import Artifact
from .config import EvalConfig, FinetuneConfig, StageConfig, build_config
from .errors import ConfigError


@dataclass(frozen=True)
class Stage:
    name: str
    config: type[StageConfig]
    handler: Callable[..., Artifact]
    needs_parent: bool = True
    makes_artifact: bool = True


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    STAGES[stage.name] = stage
    return stage


def _finetune(parent, cfg: FinetuneConfig, output: Path, overwrite: bool, resume: bool = False) -> Artifact:
    from .train.finetune import finetune

    if parent is not None and "model" not in cfg.model_fields_set:
        cfg = cfg.model_copy(update={"model": str(parent.path)})
    return finetune(cfg, output, overwrite=overwrite, resume=resume)


def _eval(parent: Artifact, cfg: EvalConfig, output: Path, overwrite: bool) -> Artifact:
    from .evaluation import evaluate

    evaluate(parent, cfg)
    return Artifact.open(parent.path, verify=False)


register_stage(Stage("finetune", FinetuneConfig, _finetune, needs_parent=False))
register_stage(Stage("eval", EvalConfig, _eval, makes_artifact=False))


def _load_optional_stages() -> None:
    """Stages of other packages of deploylm register themselves on import."""
    import importlib

    for module in ("deploylm.optimize.stages", "deploylm.compress.distill", "deploylm.compress.prune_cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get_stage(name: str) -> Stage:
    _load_optional_stages()
    if name not in STAGES:
        raise ConfigError(f"Unknown stage '{name}'. Known stages: {', '.join(STAGES)}.")
    return STAGES[name]


def parse_step(step: Any, index: int) -> tuple[Stage, StageConfig, str | None]:
    """A pipeline step is `{stage_name: {options}}`, options may include `output` and `input`."""
    if not isinstance(step, dict) or len(step) != 1:
        raise ConfigError(f"Pipeline step {index + 1} must be a mapping with exactly one stage name, e.g. '- finetune: {{...}}'.")
    (name, options), = step.items()
    stage = get_stage(name)
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"Pipeline step {index + 1} ({name}) options must be a mapping, not {type(options).__name__}.")
    options = dict(options or {})
    output = options.pop("output", None)
    return stage, build_config(stage.config, options, source=f"pipeline step {index + 1} ({name})"), output
