"""A tiny random BERT saved as a sentence-transformers directory (modules.json, 1_Pooling, sentence_bert_config):
deploylm's feature-extraction artifact embeds exactly as `SentenceTransformer(dir).encode` does, with the model's
own pipeline (Normalize or not) compared like with like."""

import json

import numpy as np
import pytest

from test_feature_extraction import TEXTS, tiny_encoder_dir

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def st_dir(path, normalize: bool):
    tiny_encoder_dir(path, seed=4)
    (path / "modules.json").write_text(json.dumps(MODULES if normalize else MODULES[:2]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48, "do_lower_case": False}))
    return path


@pytest.mark.parametrize("normalize", [True, False])
def test_artifact_equals_sentence_transformers_encode(tmp_path, normalize):
    from sentence_transformers import SentenceTransformer

    from deploylm.evaluation import predict
    from deploylm.models.embedding_import import import_embedder

    src = st_dir(tmp_path / "st", normalize)
    art = import_embedder(str(src), tmp_path / "art")
    assert art.max_length == 48  # read from sentence_bert_config.json, as sentence-transformers does
    model = SentenceTransformer(str(src), device="cpu")
    texts = TEXTS + ["word " * 80]  # the last one is truncated at 48 tokens by both
    # deploylm always L2-normalises; a pipeline without Normalize is compared with its normalised output
    want = model.encode(texts, batch_size=2, convert_to_numpy=True, normalize_embeddings=not normalize)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)  # its own Normalize did it
    got = np.array([p["embedding"] for p in predict(art, texts)])
    assert got.shape == want.shape == (len(texts), 32)
    assert np.abs(got - want).max() <= 1e-5
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
