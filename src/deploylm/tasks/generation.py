"""Text generation, the prompt side: OpenAI-style chat messages through the artifact's chat template, or a
completion prompt (text or token ids), to the token ids the engine runs. Bad input is a RequestError 400 that
names the field (`messages[2].role`), as the OpenAI API does; the CLI turns the same checks into ConfigErrors."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, RequestError
from .base import Task

# What the OpenAI chat API accepts. "developer" is the newer name of "system" (o1 and later), and most
# chat templates know only "system", so it is rendered as one.
ROLES = ("system", "user", "assistant", "developer", "tool")
_ROLE_ALIASES = {"developer": "system"}


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def no_chat_template_message(model_name: str) -> str:
    return (f"{model_name} is a base model without a chat template: use /v1/completions (or `deploylm generate` "
            "without --chat), or import it with --chat-template FILE.")


def require_chat_template(tokenizer, model_name: str, chat_template: str | None = None) -> None:
    """For the CLI (`generate --chat`): a ConfigError before any work starts."""
    if chat_template is None and not has_chat_template(tokenizer):
        raise ConfigError(no_chat_template_message(model_name))


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of text parts; got {type(content).__name__}.")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RequestError(f"{where}.content[{j}] is of type {kind!r}; this model takes only text parts "
                               '({"type": "text", "text": "..."}).')
        if not isinstance(part.get("text"), str):
            raise RequestError(f"{where}.content[{j}].text must be a string.")
        texts.append(part["text"])
    # The OpenAI API concatenates a message's text parts; a newline keeps words apart, as vLLM does.
    return "\n".join(texts)


def normalize_messages(messages: Any) -> list[dict]:
    """Validated messages as chat templates expect them: {"role", "content": str} (+ "name" if given)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects.")
    out = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object with \"role\" and \"content\"; got {type(msg).__name__}.")
        role = msg.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role {role!r} is not one of {', '.join(ROLES)}.")
        if msg.get("content") is None:
            raise RequestError(f"{where}.content is missing; every message needs text content.")
        item = {"role": _ROLE_ALIASES.get(role, role), "content": _content_text(msg["content"], where)}
        if msg.get("name") is not None:
            if not isinstance(msg["name"], str):
                raise RequestError(f"{where}.name must be a string.")
            item["name"] = msg["name"]
        out.append(item)
    return out


def build_chat_prompt(tokenizer, messages: list[dict], *, chat_template: str | None = None,
                      add_generation_prompt: bool = True, model_name: str = "This model") -> list[int]:
    """Token ids of `messages` rendered by the chat template (the artifact's, or `chat_template`)."""
    if chat_template is None and not has_chat_template(tokenizer):
        raise RequestError(no_chat_template_message(model_name))
    normalized = normalize_messages(messages)
    try:
        text = tokenizer.apply_chat_template(normalized, chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja2 errors, including the template's own raise_exception("...")
        raise RequestError(f"{model_name}'s chat template rejected these messages: {exc}.") from None
    # The template writes BOS and the turn markers itself; encoding may not add them a second time.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_completion_prompt(tokenizer, prompt: str | list[int]) -> list[int]:
    """A completion prompt: text (tokenised as `tokenizer(prompt)` is, special tokens included) or token ids."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt)["input_ids"]
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids, vocab = list(prompt), len(tokenizer)
        for i, t in enumerate(ids):
            if not 0 <= t < vocab:
                raise RequestError(f"prompt[{i}] = {t} is not a token id of this model (0..{vocab - 1}).")
    else:
        raise RequestError("prompt must be a string or a list of token ids (one prompt per request).")
    if not ids:
        raise RequestError("prompt is empty: give at least one token of text.")
    return ids


class GenerationTask(Task):
    """Causal LM: the prompt side lives in this module; decoding lives in generation/."""

    name = "text-generation"
    primary_metric = "perplexity"
    auto_model = "AutoModelForCausalLM"

    def label_set(self, targets: list) -> list[str]:
        raise ConfigError("Fine-tuning decoders is not supported yet; `deploylm finetune` takes encoders.")

    def oip_outputs(self, shapes=None):
        # Decoders are not run over OIP (engine.submit refuses them with a 400 naming the OpenAI routes): their
        # metadata lists no outputs. The inherited TEXT input lets such a request reach that refusal.
        return []

    def encode(self, inputs, tokenizer, max_length):
        raise ConfigError("A text-generation artifact is run with `deploylm generate` or served with "
                          "`deploylm serve` (/v1/completions, /v1/chat/completions), not predicted.")
