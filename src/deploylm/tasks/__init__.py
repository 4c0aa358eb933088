"""One module per task: pre-processing, model head, post-processing, metric. The only place task logic lives."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Task

_TASKS = {
    "classification": "deploylm.tasks.classification:ClassificationTask",
    "token-classification": "deploylm.tasks.token_classification:TokenClassificationTask",
    "text-generation": "deploylm.tasks.generation:GenerationTask",
    "feature-extraction": "deploylm.tasks.feature_extraction:FeatureExtractionTask",
    "extractive-qa": "deploylm.tasks.extractive_qa:ExtractiveQATask",
    "relation-classification": "deploylm.tasks.relation_classification:RelationClassificationTask",
    "multi": "deploylm.tasks.multi:MultiTask",
}


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ConfigError(f"Unknown task '{name}'. Supported tasks: {', '.join(_TASKS)}.")
    import importlib

    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_for(artifact) -> Task:
    """The task of an opened artifact, configured from it (a multi-task artifact's heads): what every runner,
    evaluation, export and server that opens an artifact uses."""
    return get_task(artifact.task).configured(artifact.path)


__all__ = ["Task", "get_task", "task_for", "task_names"]
