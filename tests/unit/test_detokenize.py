"""IncrementalDetokenizer and StopMatcher on adversarial byte sequences: characters split byte by byte, the
first token's leading space, stop strings split across pushes or begun then abandoned."""

from __future__ import annotations

import json
import random

import pytest

from deploylm.errors import ModelError
from deploylm.generation.detokenize import IncrementalDetokenizer, StopMatcher
from tiny_decoders import tiny_tokenizer

HARD = "你好，世界 😀🎉 naïve — ok"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def gpt2_byte_table() -> dict[int, str]:
    """GPT-2's byte -> printable-character table, written out here rather than taken from the code under test."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_ids(tok, text: str) -> list[int]:
    """One token per UTF-8 byte of `text`: every multi-byte character is split across tokens."""
    table = gpt2_byte_table()
    ids = [tok.convert_tokens_to_ids(table[b]) for b in text.encode("utf-8")]
    assert tok.unk_token_id not in ids and None not in ids
    return ids


def stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detok.push(i) for i in ids] + [detok.flush()]


def test_characters_split_byte_by_byte_come_out_whole(tok):
    ids = byte_ids(tok, HARD)
    pieces = stream(IncrementalDetokenizer(tok, tok.encode("Q:")), ids)
    assert "".join(pieces) == HARD
    assert not any("\ufffd" in p for p in pieces)
    # 你 is three bytes: its first two pushes hold everything back, the third gives the character
    assert pieces[:3] == ["", "", "你"]
    assert pieces[-1] == ""  # nothing was left over


def test_stream_equals_the_full_decode_for_ordinary_tokens(tok):
    rng = random.Random(0)
    texts = ["The quick brown fox", " Paris is the capital", "今天天气很好。", "Emoji: 🚀 and 😀!", '{"a": 1}']
    for _ in range(20):
        text = "".join(rng.sample(texts, 3))
        ids = tok.encode(text)
        assert "".join(stream(IncrementalDetokenizer(tok, tok.encode("Hi")), ids)) == tok.decode(ids)


def test_cut_mid_character_is_flushed_as_the_full_decode_would(tok):
    ids = byte_ids(tok, "ab😀")[:-2]  # the emoji's last two bytes never come
    detok = IncrementalDetokenizer(tok, [])
    pushed = "".join(detok.push(i) for i in ids)
    assert pushed == "ab"
    rest = detok.flush()
    assert rest and set(rest) == {"\ufffd"}
    assert pushed + rest == tok.decode(ids)
    assert detok.flush() == ""


def test_special_tokens_skipped_or_kept(tok):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok.encode("hello") + [end]
    assert "".join(stream(IncrementalDetokenizer(tok, []), ids)) == "hello"
    kept = "".join(stream(IncrementalDetokenizer(tok, [], skip_special_tokens=False), ids))
    assert kept == "hello<|im_end|>"


def sentencepiece_tokenizer():
    """Llama-2-style: '▁' for spaces, a '▁' prepended to the text, byte fallback, and a decoder that strips
    the leading space of a decoded text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(["Hello world, this is a test.", "The world is wide and the sea is deep.",
                              "Hello again world"] * 4, trainer)
    spec = json.loads(tok.to_str())
    for b in range(256):
        spec["model"]["vocab"].setdefault(f"<0x{b:02X}>", len(spec["model"]["vocab"]))
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def test_first_token_keeps_its_leading_space_after_the_prompt():
    sp = sentencepiece_tokenizer()
    world = sp.token_to_id("▁world")
    assert world is not None and sp.decode([world]) == "world"  # alone, the decoder strips the space
    detok = IncrementalDetokenizer(sp, sp.encode("Hello").ids)
    assert detok.push(world) == " world"
    # with no prompt the output starts the text, so the space goes, as in a full decode
    assert IncrementalDetokenizer(sp, []).push(world) == "world"


def test_byte_fallback_characters_come_out_whole():
    sp = sentencepiece_tokenizer()
    ids = sp.encode("Hello 你好😀").ids
    assert sp.token_to_id("<0xE4>") in ids  # the characters really are spelt in byte tokens
    pieces = stream(IncrementalDetokenizer(sp, sp.encode("Say:").ids), ids)
    assert "".join(pieces) == " Hello 你好😀"
    assert not any("\ufffd" in p for p in pieces)


def test_a_tokenizer_without_a_fast_backend_is_a_model_error():
    with pytest.raises(ModelError, match="fast"):
        IncrementalDetokenizer(object(), [])


def feed_all(stops: list[str], chunks: list[str]) -> tuple[list[str], bool]:
    m = StopMatcher(stops)
    out, hit = [], False
    for c in chunks:
        text, hit = m.feed(c)
        out.append(text)
        if hit:
            break
    if not hit:
        out.append(m.flush())
    return out, hit


def test_stop_string_split_across_chunks_is_never_streamed():
    out, hit = feed_all(["</answer>"], ["The result", " is 4</an", "swer> and more"])
    assert hit
    assert "".join(out) == "The result is 4"
    assert out[1] == " is 4"  # "</an" was held, not emitted


def test_held_text_is_released_when_the_stop_string_diverges():
    out, hit = feed_all(["STOP"], ["go ST", "O", "RE now"])
    assert not hit
    assert out == ["go ", "", "STORE now", ""]
    assert "".join(out) == "go STORE now"


def test_prefix_held_at_the_end_is_flushed():
    out, hit = feed_all(["\n\n"], ["line one\n"])
    assert not hit and out == ["line one", "\n"]


def test_earliest_of_several_stops_wins_and_later_feeds_are_empty():
    m = StopMatcher(["world", "lo w"])
    assert m.feed("hello world") == ("hel", True)
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


def test_no_stops_passes_text_straight_through():
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", False)
    assert m.flush() == ""


def test_stop_inside_one_chunk_with_chinese_text():
    out, hit = feed_all(["。"], ["你好", "，世界。今天"])
    assert hit and "".join(out) == "你好，世界"
