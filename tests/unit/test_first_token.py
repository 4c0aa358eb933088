"""The first-token last layer (optimize/first_token.py) is exact: the same logits as the unmodified
classifier on padded batches, for each BERT-shaped architecture deploylm exports, while the last layer
really computes one position."""

import numpy as np
import pytest
import torch

from deploylm.errors import ConfigError
from deploylm.optimize.first_token import applies, first_token_last_layer


def _tiny(arch: str):
    import transformers

    common = dict(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=80, num_labels=3)
    cfg = getattr(transformers, f"{arch}Config")(**common)
    torch.manual_seed(0)
    return getattr(transformers, f"{arch}ForSequenceClassification")(cfg, ).eval()


def _batch(seed: int):
    rng = np.random.default_rng(seed)
    ids = torch.tensor(rng.integers(5, 500, size=(4, 23)))
    mask = torch.ones_like(ids)
    for row, length in enumerate((23, 17, 5, 1)):  # padded rows of every length, down to the first token alone
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ["Bert", "Roberta", "Electra", "XLMRoberta"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_same_logits_as_the_full_model(arch, attn):
    model = _tiny(arch)
    model.config._attn_implementation = attn
    ids, mask = _batch(1)
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
        first_token_last_layer(model)
        after = model(input_ids=ids, attention_mask=mask).logits
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert after.shape == before.shape == (4, 3)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    assert hidden.shape == (4, 1, 32)  # the last layer computed the first position only


def test_only_tasks_whose_head_reads_the_first_token():
    assert applies("classification", {"model_type": "bert"})
    assert not applies("token-classification", {"model_type": "bert"})
    assert not applies("classification", {"model_type": "bert", "is_decoder": True})


def test_unknown_layer_structure_is_refused_clearly():
    model = _tiny("Bert")
    del model.bert.encoder.layer[-1].attention.output
    with pytest.raises(ConfigError, match="attention.output.*--all-tokens-last-layer"):
        first_token_last_layer(model)
