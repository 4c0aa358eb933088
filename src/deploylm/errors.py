"""Every error deploylm raises on purpose. The CLI prints these as one paragraph, exit code 2."""

from __future__ import annotations


class DeployLMError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""

    exit_code = 2


class ConfigError(DeployLMError):
    """A config file, CLI option or pipeline step is invalid."""


class DataError(DeployLMError):
    """A dataset path, layout, column or label is wrong, or the data is empty."""


class ModelError(DeployLMError):
    """A model alias, directory or Hub id cannot be resolved or loaded."""


class ArtifactError(DeployLMError):
    """An artifact is missing, incomplete, altered, or would overwrite another."""


class ParityError(DeployLMError):
    """A transformed model's outputs differ from its parent beyond tolerance."""


class GateError(DeployLMError):
    """A variant is slower or less accurate than allowed, so it is refused."""


class BackendUnavailableError(DeployLMError):
    """A runtime backend (onnxruntime, ...) is not installed or cannot run this model."""


class RequestError(DeployLMError):
    """A bad request to the server; carries the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
