"""Tiny random-weight decoders (Llama, Qwen2, Gemma3) with a tiny byte-level BPE tokenizer and a ChatML template:
what the decoder unit tests run on, in seconds. Every UTF-8 byte is a token of the tokenizer, so any text (Chinese,
emoji) encodes, and multi-byte characters can be split across tokens."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Hello world, this is a tiny tokenizer for tests.",
    "A gripping, beautifully acted film.", "Paris is the capital of France.", "你好，世界。今天天气很好。",
    "Emoji: 😀 🎉 🚀 and more text to merge common pairs of bytes.", '{"name": "value", "count": 3}',
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
ARCHS = ("llama", "qwen2", "gemma3")


def tiny_tokenizer(chat_template: bool = True, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    if chat_template:
        fast.chat_template = CHATML
    return fast


def tiny_config(arch: str, vocab_size: int, **overrides):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                  eos_token_id=2, pad_token_id=0, bos_token_id=None,
                  initializer_range=0.2)  # larger than the default: varied greedy tokens, not one repeated
    if arch == "llama":
        cfg = LlamaConfig(**common)
    elif arch == "qwen2":
        cfg = Qwen2Config(**common)
    elif arch == "gemma3":  # a sliding-window layer and a global one, as Gemma 3 interleaves them
        cfg = Gemma3TextConfig(**{**common, "num_hidden_layers": 2}, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    else:
        raise ValueError(f"unknown tiny arch {arch}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny_decoder(arch: str, path: Path, chat_template: bool = True, seed: int = 0) -> Path:
    """A random-weight causal LM of `arch` saved as a plain Hugging Face directory (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = tiny_tokenizer(chat_template)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok)), dtype=torch.float32)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = eos
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
