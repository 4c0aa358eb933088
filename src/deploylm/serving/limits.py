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

    def check_texts(self, inputs: Any, max_length: int) -> list[str]:
        """Validate a list of texts; return them (cut when truncate is on). Raises RequestError(400)."""
        if not isinstance(inputs, (list, tuple)):
            raise RequestError(f"'inputs' must be a list of strings, got {type(inputs).__name__}.", 400)
        if not inputs:
            raise RequestError("'inputs' is empty: send at least one text.", 400)
        if len(inputs) > self.max_inputs:
            raise RequestError(
                f"{len(inputs)} inputs in one request; the limit is {self.max_inputs}. Split the request.", 400)
        # A word piece is at least one character and BERT-style tokenizers map a word of > 100 characters to one
        # [UNK], so max_length * 100 characters always hold everything the model can read.
        cut_at = max_length * 100
        texts = []
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise RequestError(f"inputs[{i}] must be a string, got {type(text).__name__}.", 400)
            if len(text) > self.max_text_chars:
                if not self.truncate:
                    raise RequestError(
                        f"inputs[{i}] has {len(text)} characters; the limit is {self.max_text_chars}. Shorten it, "
                        "or start the server with --truncate to cut texts to the model's maximum length.", 400)
                text = text[:cut_at]
            texts.append(text)
        return texts


def decode_utf8(items: Sequence[bytes], where: str) -> list[str]:
    out = []
    for i, raw in enumerate(items):
        try:
            out.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}[{i}] is not valid UTF-8 ({exc.reason} at byte {exc.start}).", 400) from None
    return out
