"""Runners: arrays in, arrays out. Tasks and serving talk only to this protocol, never to a backend."""

from .base import Runner, open_runner

__all__ = ["Runner", "open_runner"]
