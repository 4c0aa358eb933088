"""A tiny random sentence encoder (plain HF directory, no head) for the feature-extraction tests."""

from __future__ import annotations

from conftest import minilm_dir


def tiny_encoder_dir(path, seed: int = 0):
    """A random 2-layer BertModel (no head) with the MiniLM tokenizer, saved as a plain HF directory."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
    AutoModel.from_config(cfg, attn_implementation="eager").eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
