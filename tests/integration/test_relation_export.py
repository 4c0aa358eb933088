"""A tiny relation model through `deploylm export` and `deploylm quantize --method dynamic-int8`: the graph keeps the
encoder's inputs and one `logits` output, onnxruntime gives the torch logits on marked inputs (the markers are found
inside the graph from input_ids), and the int8 variant passes its parity check and gate."""

import numpy as np
import pytest

from relation_data import build_tiny_relation_artifact, write_relation_dir
from deploylm.optimize.gate import GateOptions

LENIENT = dict(allow_slower=True)  # speed is benchmarked, not asserted, in tests
TEXTS = ["<e1>John Smith</e1> was born in <e2>Oslo</e2> .", "<e2>Acme Corp</e2> hired <e1>Li Wei</e1> last year",
         "a much longer sentence where <e1>Paris</e1> , the capital , lies in <e2>France</e2> and pads the batch"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("relx")
    # head_scale 3: rows clearly decided for parity, yet logits small enough that int8 rounding of a random
    # (untrained) encoder stays inside dynamic-int8's 0.5 logit bound
    return root, build_tiny_relation_artifact(root / "rel", seed=2, head_scale=3.0), write_relation_dir(root / "data")


def _batch(art, texts):
    from deploylm.evaluation import load_tokenizer
    from deploylm.runtime.batching import pad_batch
    from deploylm.tasks import get_task

    tok = load_tokenizer(art)
    feats, _ = get_task("relation-classification").encode(texts, tok, art.max_length)
    return pad_batch(feats, tok.pad_token_id, ("input_ids", "attention_mask", "token_type_ids"))


def test_export_keeps_inputs_and_logits_and_matches_torch(env):
    import onnx
    import onnxruntime as ort
    import torch

    from deploylm.optimize.export_onnx import export
    from deploylm.tasks import get_task

    root, art, data = env
    out = export(art, root / "onnx", gate=GateOptions(data=str(data), **LENIENT))
    graph = onnx.load(str(out.path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    assert out.manifest["optimization"]["rewrites"] == []  # the first-token rewrite would drop the marker states
    batch = _batch(out, TEXTS)  # the ONNX artifact's own tokenizer knows the markers
    sess = ort.InferenceSession(str(out.path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {k: v.astype(np.int64) for k, v in batch.items()})[0]
    model = get_task("relation-classification").load_model(str(art.path))
    with torch.inference_mode():
        want = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}).logits.numpy()
    assert got.shape == (3, len(art.labels))
    assert np.abs(got - want).max() < 1e-4
    # the logits really depend on where the markers are: moving them changes the answer
    swapped = _batch(out, [t.replace("e1>", "x>").replace("e2>", "e1>").replace("x>", "e2>") for t in TEXTS])
    other = sess.run(["logits"], {k: v.astype(np.int64) for k, v in swapped.items()})[0]
    assert np.abs(other - got).max() > 1e-3


def test_dynamic_int8_passes_parity_and_the_gate(env):
    from deploylm.artifacts import Artifact
    from deploylm.evaluation import predict
    from deploylm.optimize.quantize import quantize

    root, art, data = env
    out = quantize(art, root / "int8", "dynamic-int8", gate=GateOptions(data=str(data), **LENIENT))
    m = Artifact.open(out.path).manifest
    assert m["format"] == "onnx" and m["parity"]["passed"]
    # real-text parity saw the marked inputs: the 16 dev examples, 12 fixed sentences both ways, 8 plain texts
    assert m["parity"]["real"]["positions"] == 16 + 24 + 8
    assert m["gate"]["metric"] == "macro_f1_no_other" and m["gate"]["samples"] == 16
    preds = predict(out, TEXTS)
    assert [set(p) for p in preds] == [{"label", "score"}] * 3
    assert all(p["label"] in art.labels for p in preds)
