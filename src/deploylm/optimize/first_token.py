"""First-token last layer: an exact export rewrite for sequence classification.

A BERT-family classifier reads only the first token ([CLS] / <s>) of the last encoder layer (BERT's
pooler, RoBERTa's and ELECTRA's classification heads all take `hidden[:, 0]`). Every other position
of that layer's output is computed and thrown away. In the last layer the keys and values still need
every token, but the query, the attention output projection, both LayerNorms and the whole
feed-forward block need only the first one. On MiniLM-L6 that removes about a seventh of the
encoder's matmul work, and the logits are the same up to float rounding (the parity check verifies it).

Neither transformers nor onnxruntime's optimiser does this (they do not know which positions a head
reads), so it is written here: the last layer is replaced, for export only, by a module that runs the
layer's own submodules on the first position.
"""

from __future__ import annotations

from ..errors import ConfigError

# Every task whose head reads position 0 of the last layer and nothing else.
FIRST_TOKEN_TASKS = ("classification",)
# The rewrite's name in a manifest's `optimization.rewrites`.
FIRST_TOKEN = "first-token-last-layer"


def recorded_rewrites(art) -> list[str]:
    """The graph rewrites an artifact's manifest says its model was exported with."""
    return (art.manifest.get("optimization") or {}).get("rewrites", [])


def applies(task: str, config: dict) -> bool:
    """Whether the rewrite is exact for this task and architecture (config.json as a dict)."""
    return task in FIRST_TOKEN_TASKS and not config.get("is_decoder", False)


def _layers(model):
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or len(layers) == 0:
        raise ConfigError(f"{type(model).__name__} has no BERT-style encoder.layer list; export it with "
                          "--all-tokens-last-layer.")
    return layers


def first_token_last_layer(model):
    """Replace model's last encoder layer (in place) by its first-token-only equivalent; returns model."""
    import torch

    class FirstTokenLayer(torch.nn.Module):
        """`layer` computed for position 0 only; keys and values still see every position."""

        def __init__(self, layer):
            super().__init__()
            attn = getattr(layer, "attention", None)
            missing = [name for name, obj in (("attention.self", getattr(attn, "self", None)),
                                              ("attention.output", getattr(attn, "output", None)),
                                              ("feed_forward_chunk", getattr(layer, "feed_forward_chunk", None)))
                       if obj is None]
            if missing:
                raise ConfigError(f"{type(layer).__name__} lacks {', '.join(missing)}, so the first-token rewrite "
                                  "does not know its structure; export with --all-tokens-last-layer.")
            self.layer = layer

        def forward(self, hidden, attention_mask=None, *args, **kwargs):
            attn = self.layer.attention
            sa = attn.self
            batch, heads, size = hidden.shape[0], sa.num_attention_heads, sa.attention_head_size
            first = hidden[:, :1]
            q = sa.query(first).view(batch, 1, heads, size).transpose(1, 2)
            k = sa.key(hidden).view(batch, -1, heads, size).transpose(1, 2)
            v = sa.value(hidden).view(batch, -1, heads, size).transpose(1, 2)
            scores = torch.matmul(q, k.transpose(2, 3)) * getattr(sa, "scaling", size ** -0.5)
            if attention_mask is not None:
                # (batch, 1, query, key) or (batch, 1, 1, key): keep the first query's row. Eager attention
                # gets an additive float mask, SDPA a boolean one (True = attend).
                mask = attention_mask[:, :, :1] if attention_mask.dim() == 4 else attention_mask
                if mask.dtype == torch.bool:
                    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
                else:
                    scores = scores + mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(batch, 1, heads * size)
            return self.layer.feed_forward_chunk(attn.output(context, first))

    layers = _layers(model)
    layers[-1] = FirstTokenLayer(layers[-1])
    return model
