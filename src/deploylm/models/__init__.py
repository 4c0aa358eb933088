from .registry import ModelSource, known_models, resolve_model

__all__ = ["ModelSource", "known_models", "resolve_model"]
