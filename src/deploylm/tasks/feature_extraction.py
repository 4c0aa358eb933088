"""Sentence embeddings (feature extraction): an encoder, mean pooling over the attention mask, L2 norm.

The same computation as sentence-transformers' all-MiniLM-L6-v2 (Transformer -> Pooling(mean) ->
Normalize). Pooling lives inside the torch module (SentenceEmbedder), so every runner and the ONNX export
return the finished `sentence_embedding`, one row per input; nothing downstream re-implements it.
Artifacts come from `deploylm import MODEL --task feature-extraction`; there is nothing to fine-tune here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .base import Task
from .wire import TensorSpec, width

NOT_TRAINED = ("feature-extraction artifacts are made with `deploylm import`, not fine-tuned; run "
               "`deploylm import minilm-l6 --task feature-extraction --output DIR` (or another sentence-embedding "
               "encoder) and use that directory.")


def mean_pool_normalize(hidden, attention_mask):
    """sentence-transformers' mean pooling then Normalize: sum(h * mask) / clamp(sum(mask), 1e-9), then p=2.
    The clamp keeps an all-padding row finite (zero) instead of NaN."""
    import torch.nn.functional as F

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


@dataclass
class SentenceEmbeddingOutput:
    sentence_embedding: Any  # [batch, hidden] float tensor, unit L2 norm per row


def SentenceEmbedder(backbone):
    """A torch module around an AutoModel encoder whose forward returns .sentence_embedding. Built in a
    function so that importing this module imports no torch (the CLI imports tasks at start-up)."""
    import torch

    class _SentenceEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.config = backbone.config

        @property
        def wrapped_model(self):
            # runtime.torch_runner.model_input_names reads which inputs the encoder itself takes (MPNet has
            # no token_type_ids): the wrapper's own signature names all three.
            return self.backbone

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                feeds["token_type_ids"] = token_type_ids
            hidden = self.backbone(**feeds).last_hidden_state
            return SentenceEmbeddingOutput(mean_pool_normalize(hidden, attention_mask))

        def save_pretrained(self, path, **kwargs):
            # The artifact is the plain encoder directory (AutoModel opens it); pooling has no weights.
            self.backbone.save_pretrained(path, **kwargs)

    return _SentenceEmbedder().eval()


SHOWN_DIMS = 6  # of an embedding, on `deploylm predict`'s line


class FeatureExtractionTask(Task):
    name = "feature-extraction"
    primary_metric = None  # no dev-set metric: the optimisation gate judges parity and speed only
    auto_model = "AutoModel"
    output_names = ("sentence_embedding",)
    token_level_outputs = ()
    embedding_output = "sentence_embedding"

    # --- training: not a fine-tuning task --------------------------------------------
    def label_set(self, targets):
        raise ConfigError(NOT_TRAINED)

    def train_features(self, examples, tokenizer, label2id, max_length):
        raise ConfigError(NOT_TRAINED)

    def collator(self, tokenizer):
        raise ConfigError(NOT_TRAINED)

    def trainer_metrics(self, id2label):
        raise ConfigError(NOT_TRAINED)

    def check_targets(self, targets, labels, source):
        raise ConfigError(f"feature-extraction has no labels to evaluate against ({source}). " + NOT_TRAINED)

    def score(self, predictions, targets):
        raise ConfigError("feature-extraction has no task metric: `deploylm eval` does not apply; compare "
                          "embeddings (cosine similarity) against a reference instead.")

    # --- inference --------------------------------------------------------------------
    def load_model(self, location: str, labels: list[str] | None = None, **kwargs):
        if labels:
            raise ConfigError(f"feature-extraction models have no labels (got {labels[:5]}). " + NOT_TRAINED)
        return SentenceEmbedder(super().load_model(location, None, **kwargs))

    def encode(self, inputs: Sequence[str], tokenizer, max_length):
        bad = [type(t).__name__ for t in inputs if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"feature-extraction embeds texts (strings); got {bad[0]}.")
        enc = tokenizer(list(inputs), truncation=True, max_length=max_length)
        feats = [{k: enc[k][i] for k in enc.keys()} for i in range(len(inputs))]
        return feats, [None] * len(inputs)

    def show(self, item, prediction):  # the whole vector only with --json
        head = ", ".join(f"{v:.4f}" for v in prediction["embedding"][:SHOWN_DIMS])
        return f"{prediction['dimensions']} dims [{head}, ...]  {item}"

    def decode(self, embedding: np.ndarray, aux, id2label):
        values = [float(x) for x in np.asarray(embedding, dtype=np.float32)]
        return {"embedding": values, "dimensions": len(values)}

    # --- the wire -------------------------------------------------------------------------
    def oip_outputs(self, shapes=None):
        return [TensorSpec("EMBEDDING", "FP32", (-1, width(shapes, self.embedding_output)))]

    def oip_values(self, preds):
        return {"EMBEDDING": self.embedding_vectors(preds)}

    def embedding_vectors(self, preds):
        """[N, D] float32: the predictions' values are float32 numbers already, so nothing is rounded."""
        return np.array([p["embedding"] for p in preds], dtype=np.float32).reshape(len(preds), -1)
