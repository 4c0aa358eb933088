"""`deploylm import` of the packaged GGUF decoders (SmolLM2-135M-Instruct, Gemma 3 270M): the artifact reloads
with plain transformers, without importing gguf, and decodes greedily exactly as the GGUF-loaded model does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deploylm.models import resolve_model
from deploylm.models.importer import import_decoder

pytestmark = pytest.mark.realmodel
PROMPT = "The capital of France is"

# Runs in a fresh interpreter so that nothing imported by the test (gguf included) is already loaded.
PLAIN_GREEDY = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = tok(sys.argv[2], return_tensors="pt")["input_ids"]
with torch.inference_mode():
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
print(json.dumps({"tokens": out[0, ids.shape[1]:].tolist(), "class": type(model).__name__,
                  "gguf_imported": "gguf" in sys.modules, "chat_template": bool(tok.chat_template)}))
"""


def _plain_greedy(path) -> dict:
    done = subprocess.run([sys.executable, "-c", PLAIN_GREEDY, str(path), PROMPT], capture_output=True, text=True,
                          check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gguf_greedy(alias: str) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model(alias, decoders=True)
    tok = AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file, dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_smollm2_imports_and_decodes_like_its_gguf(smollm2_artifact):
    art = smollm2_artifact
    dec = art.manifest["decoder"]
    assert (dec["architecture"], dec["chat_template"], art.max_length) == ("LlamaForCausalLM", True, 8192)
    assert dec["gguf"]["sha256"] == art.manifest["parent"]["hash"] and len(dec["gguf"]["sha256"]) == 64
    assert 134e6 < dec["params"] < 135e6  # SmolLM2-135M: 134.5M with the embedding tied to the LM head
    plain = _plain_greedy(art.path)
    assert plain["class"] == "LlamaForCausalLM" and plain["chat_template"] and not plain["gguf_imported"]
    assert plain["tokens"] == _gguf_greedy("smollm2-135m")


def test_gemma3_imports_as_gemma3_base_model(tmp_path):
    """Gemma's GGUF takes minutes to dequantise, so it is loaded once, by the import (whose own check compares
    the saved model's logits with the GGUF-loaded one's); the SmolLM2 test above compares greedy tokens with a
    second, independent GGUF load. Here the plain reload must also continue the prompt coherently."""
    from transformers import AutoTokenizer

    art = import_decoder("gemma3-270m", tmp_path / "gemma")
    dec = art.manifest["decoder"]
    assert dec["architecture"] == "Gemma3ForCausalLM" and dec["chat_template"] is False
    assert (dec["context_length"], art.max_length) == (32768, 8192)  # capped by --max-context's default
    assert dec["parity"]["max_abs_logit_diff"] <= 1e-5
    plain = _plain_greedy(art.path)
    assert plain["class"] == "Gemma3ForCausalLM" and not plain["gguf_imported"]
    # a base model continues the sentence (this one about France; a garbled conversion would not stay on topic)
    assert "France" in AutoTokenizer.from_pretrained(art.path).decode(plain["tokens"])
