"""The Runner protocol and how an artifact picks its runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from ..artifacts import Artifact


@runtime_checkable
class Runner(Protocol):
    """run(batch) -> outputs. batch: int64 arrays [batch, seq] named like the model's inputs
    (input_ids, attention_mask, token_type_ids); outputs: {name: float32 array} for every name in
    output_names (the task's, e.g. ("logits",); QA would return start_logits and end_logits)."""

    backend: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# format in the manifest -> factory(artifact, **options). Optimise registers "onnx" here.
RUNNER_FACTORIES: dict[str, object] = {}


def register_runner(fmt: str):
    def deco(factory):
        RUNNER_FACTORIES[fmt] = factory
        return factory

    return deco


def open_runner(artifact: "Artifact", **options) -> Runner:
    if artifact.format == "transformers" and "transformers" not in RUNNER_FACTORIES:
        from . import torch_runner  # noqa: F401  (registers itself)
    if artifact.format == "onnx" and "onnx" not in RUNNER_FACTORIES:
        try:
            from . import ort_runner  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError(
                f"Artifact {artifact.path} is ONNX but onnxruntime cannot be imported ({exc}). Install onnxruntime."
            ) from None
    factory = RUNNER_FACTORIES.get(artifact.format)
    if factory is None:
        raise BackendUnavailableError(
            f"No runner for artifact format '{artifact.format}'. Known formats: {', '.join(sorted(RUNNER_FACTORIES))}."
        )
    return factory(artifact, **options)
