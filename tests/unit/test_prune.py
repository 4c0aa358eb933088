"""deploylm prune on tiny random BERTs: shapes and parameter counts are what the options say, the shrunk model
equals the masked unshrunk one, the artifact reloads from its directory alone with the same outputs, importance
is the mask gradient and is deterministic, and bad input fails clearly with nothing written."""

from pathlib import Path

import pytest
import torch

from conftest import build_tiny_artifact
from deploylm.compress.importance import importance_batches, mask_gradients, unit_masks
from deploylm.compress.prune import prune
from deploylm.compress.shrink import apply_plan, layer_shapes
from deploylm.config import PruneConfig, build_config
from deploylm.errors import ConfigError, DataError
from deploylm.tasks import get_task, task_for

HIDDEN, HEADS, FFN, LAYERS = 32, 4, 64, 3
HEAD = HIDDEN // HEADS


def write_sst2(d: Path, n_train: int = 64, n_dev: int = 32) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    pos = ["a great and moving film", "wonderful acting , lovely story", "funny and warm"]
    neg = ["a dull , tedious mess", "boring and far too long", "the plot makes no sense"]
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = ["sentence\tlabel"] + [f"{(pos if i % 2 else neg)[i % 3]} {i}\t{i % 2}" for i in range(n)]
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    art = build_tiny_artifact(root / "cls", labels=["0", "1"], seed=5, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, intermediate_size=FFN)
    return root, art, write_sst2(root / "data")


def load(art):
    return task_for(art).load_model(str(art.path))


def forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


IDS = torch.randint(1000, 20000, (3, 11), generator=torch.Generator().manual_seed(0))

# parameters of one unit, counted by hand from BERT's shapes
PER_HEAD = 3 * (HIDDEN * HEAD + HEAD) + HIDDEN * HEAD  # Q/K/V rows + their biases, W_O columns
PER_NEURON = HIDDEN + 1 + HIDDEN  # intermediate row + its bias, output column
PER_LAYER = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * 2 * HIDDEN + (HIDDEN * FFN + FFN) + (FFN * HIDDEN + HIDDEN)


def test_shapes_and_parameter_count_follow_the_options(env):
    root, art, data = env
    out = prune(art, PruneConfig(data=str(data), heads=0.5, ffn=0.25, layers=1, seed=1), root / "p-shapes")
    rec = out.manifest["pruning"]
    # one of 3 layers dropped; then half of the 8 remaining heads and a quarter of the 128 neurons
    assert len(rec["shapes"]) == LAYERS - 1 and len(rec["layers_kept"]) == LAYERS - 1
    assert sum(s["heads"] for s in rec["shapes"]) == 4 and all(s["heads"] >= 1 for s in rec["shapes"])
    assert sum(s["ffn"] for s in rec["shapes"]) == 96
    model = load(out)
    assert [(s.heads, s.ffn) for s in layer_shapes(model)] == [(s["heads"], s["ffn"]) for s in rec["shapes"]]
    before = sum(p.numel() for p in load(art).parameters())
    expected = before - PER_LAYER - 4 * PER_HEAD - 32 * PER_NEURON
    assert rec["params_before"] == before
    assert rec["params_after"] == expected == sum(p.numel() for p in model.parameters())
    m = out.manifest
    assert m["stage"] == "prune" and m["parent"]["hash"] == art.hash
    assert m["config"]["heads"] == 0.5 and m["config"]["layers"] == 1 and m["config"]["mode"] == "recover"
    assert set(rec["dev_metrics"]) == {"parent", "pruned"} and "data:dev" in m["metrics"]
    assert (out.path / "pruning.json").is_file() and rec["loads_with"].startswith("deploylm")


def test_the_artifact_equals_the_masked_parent_and_reloads_alone(env):
    root, art, data = env
    out = prune(art, PruneConfig(data=str(data), heads=0.5, ffn=0.5), root / "p-mask")
    rec = out.manifest["pruning"]
    parent = load(art)
    heads = [torch.zeros(HEADS).index_fill_(0, torch.tensor(rec["heads_kept"][str(l)]), 1.0) for l in range(LAYERS)]
    ffn = [torch.zeros(FFN).index_fill_(0, torch.tensor(rec["ffn_kept"][str(l)]), 1.0) for l in range(LAYERS)]
    with unit_masks(parent, heads, ffn):
        masked = forward(parent, IDS)
    reloaded = forward(load(out), IDS)  # from the directory alone, through Task.load_model
    assert torch.allclose(reloaded, masked, atol=1e-5)
    assert not torch.allclose(reloaded, forward(parent, IDS), atol=1e-3)  # really pruned


def test_shrinking_equals_masking_and_save_reload_keeps_outputs(tmp_path, env):
    _, art, _ = env
    model = load(art)
    heads = {0: [1, 3], 1: [0], 2: [0, 1, 2, 3]}
    neurons = {0: list(range(0, FFN, 2)), 1: [5, 6, 7], 2: list(range(FFN))}
    hm = [torch.zeros(HEADS).index_fill_(0, torch.tensor(heads[l]), 1.0) for l in range(LAYERS)]
    fm = [torch.zeros(FFN).index_fill_(0, torch.tensor(neurons[l]), 1.0) for l in range(LAYERS)]
    with unit_masks(model, hm, fm):
        masked = forward(model, IDS)
    apply_plan(model, list(range(LAYERS)), heads, neurons)
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (HEAD, HIDDEN)
    assert model.bert.encoder.layer[1].output.dense.weight.shape == (HIDDEN, 3)
    shrunk = forward(model, IDS)
    assert torch.allclose(shrunk, masked, atol=1e-5)

    from deploylm.compress.pruned_model import write_spec

    model.save_pretrained(tmp_path)
    write_spec(tmp_path, layer_shapes(model))
    again = get_task("classification").load_model(str(tmp_path))
    assert torch.equal(forward(again, IDS), shrunk)


def test_mask_gradient_is_the_loss_derivative(env):
    """Checked against a finite difference of the loss in one head's and one neuron's mask."""
    _, art, data = env
    from deploylm.data import load_dataset
    from deploylm.evaluation import load_tokenizer

    model = load(art).double()
    task = task_for(art)
    batch = importance_batches(task, load_dataset(str(data)).split("train").head(4), load_tokenizer(art),
                               {"0": 0, "1": 1}, 32)[0]
    grads = mask_gradients(model, [batch])

    def loss_of_example(i, layer, head=None, neuron=None, eps=0.0):
        hm = [torch.ones(HEADS, dtype=torch.double) for _ in range(LAYERS)]
        fm = [torch.ones(FFN, dtype=torch.double) for _ in range(LAYERS)]
        if head is not None:
            hm[layer][head] += eps
        else:
            fm[layer][neuron] += eps
        one = {k: v[i:i + 1] for k, v in batch.items()}
        with torch.no_grad(), unit_masks(model, hm, fm):
            return float(model(**one).loss)

    eps = 1e-5
    for i, layer, head, neuron in ((0, 1, 2, None), (2, 0, None, 17)):
        fd = (loss_of_example(i, layer, head, neuron, eps) - loss_of_example(i, layer, head, neuron, -eps)) / (2 * eps)
        got = grads.heads[layer][i, head] if head is not None else grads.ffn[layer][i, neuron]
        assert float(got) == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_importance_and_choice_are_deterministic_for_a_seed(env):
    root, art, data = env
    a = prune(art, PruneConfig(data=str(data), heads=0.5, ffn=0.5, importance_samples=24, seed=7), root / "det-a")
    b = prune(art, PruneConfig(data=str(data), heads=0.5, ffn=0.5, importance_samples=24, seed=7), root / "det-b")
    assert a.manifest["pruning"]["heads_kept"] == b.manifest["pruning"]["heads_kept"]
    assert a.manifest["pruning"]["ffn_kept"] == b.manifest["pruning"]["ffn_kept"]
    assert a.manifest["files"]["model.safetensors"] == b.manifest["files"]["model.safetensors"]


def test_layers_only_stays_a_plain_transformers_artifact(env):
    root, art, data = env
    out = prune(art, PruneConfig(data=str(data), layers=2), root / "p-layers")
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(out.path)
    assert plain.config.num_hidden_layers == 1 and not (out.path / "pruning.json").exists()
    assert torch.equal(forward(plain.eval(), IDS), forward(load(out), IDS))


@pytest.mark.parametrize("options, needle", [
    (dict(heads=1.0), "less than 1"),
    (dict(ffn=-0.1), "greater than or equal to 0"),
    (dict(), "Nothing to prune"),
    (dict(heads=0.0, ffn=0.0), "Nothing to prune"),
    (dict(layers=LAYERS), "every layer"),
    (dict(heads=0.95), "without any"),
    (dict(unstructured=0.5, heads=0.2), "cannot be combined"),
    (dict(heads=0.5, distill_from_parent=True), "--recover-epochs"),
    (dict(heads=0.5, mode="greedy"), "mode"),
])
def test_bad_options_are_refused_and_nothing_is_written(env, tmp_path, options, needle):
    _, art, data = env
    with pytest.raises(ConfigError, match=needle):
        prune(art, build_config(PruneConfig, {"data": str(data), **options}), tmp_path / "never")
    assert not (tmp_path / "never").exists() and list(tmp_path.iterdir()) == []


def test_missing_data_is_refused(env, tmp_path):
    _, art, _ = env
    with pytest.raises(DataError):
        prune(art, PruneConfig(data=str(tmp_path / "nope"), heads=0.5), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_the_runner_serve_and_bench_use_takes_a_pruned_artifact(env):
    """open_runner is what serve, bench, eval and the gates open an artifact with."""
    import numpy as np

    from deploylm.artifacts import Artifact
    from deploylm.config import EvalConfig
    from deploylm.evaluation import evaluate
    from deploylm.runtime import open_runner

    root, art, data = env
    out = prune(art, PruneConfig(data=str(data), heads=0.5, ffn=0.5), root / "p-runner")
    reopened = Artifact.open(out.path)
    runner = open_runner(reopened)
    ids = IDS.numpy()
    got = runner.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    assert runner.backend == "torch"
    assert np.allclose(got["logits"], forward(load(out), IDS).numpy(), atol=1e-5)
    record = evaluate(reopened, EvalConfig(data=str(data)))
    assert record["accuracy"] == out.manifest["metrics"]["data:dev"]["accuracy"]  # the metric prune recorded
