"""Request limits shared by every transport: safe defaults, each configurable from the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import RequestError


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # 1 MiB: beyond -> 413 before the body is read
    max_inputs: int = 256  # texts per request
    max_text_chars: int = 10_000  # per text: beyond -> 400, or cut when truncate is on
    truncate: bool = False  # cut over-long texts (to what the model can read) instead of refusing them
    api_key: str | None = None  # Bearer token; None = no auth

    def check_items(self, inputs: Any) -> list:
        """A request's items: a non-empty list of at most max_inputs. Each item is then the task's to read
        (Task.inputs_from_json), its texts checked by a TextLimit. Raises RequestError(400)."""
        if not isinstance(inputs, (list, tuple)):
            raise RequestError(f"'inputs' must be a list of strings, got {type(inputs).__name__}.", 400)
        if not inputs:
            raise RequestError("'inputs' is empty: send at least one text.", 400)
        if len(inputs) > self.max_inputs:
            raise RequestError(
                f"{len(inputs)} inputs in one request; the limit is {self.max_inputs}. Split the request.", 400)
        return list(inputs)

    def text_limit(self, max_length: int) -> "TextLimit":
        return TextLimit(self, max_length)


class TextLimit:
    """A tasks.wire.TextCheck with the server's limits: each text must be a string of at most max_text_chars
    (cut instead when truncate is on); counts the characters it passed (`chars`)."""

    def __init__(self, limits: Limits, max_length: int):
        # A word piece is at least one character and BERT-style tokenizers map a word of > 100 characters to one
        # [UNK], so max_length * 100 characters always hold everything the model can read.
        self.limits, self.cut_at, self.chars = limits, max_length * 100, 0

    def __call__(self, text: Any, where: str) -> str:
        if not isinstance(text, str):
            raise RequestError(f"{where} must be a string, got {type(text).__name__}.", 400)
        if len(text) > self.limits.max_text_chars:
            if not self.limits.truncate:
                raise RequestError(
                    f"{where} has {len(text)} characters; the limit is {self.limits.max_text_chars}. Shorten it, "
                    "or start the server with --truncate to cut texts to the model's maximum length.", 400)
            text = text[:self.cut_at]
        self.chars += len(text)
        return text


def decode_utf8(items: Sequence[bytes], where: str) -> list[str]:
    out = []
    for i, raw in enumerate(items):
        try:
            out.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}[{i}] is not valid UTF-8 ({exc.reason} at byte {exc.start}).", 400) from None
    return out
