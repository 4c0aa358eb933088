"""Physical removal of attention heads, FFN neurons and whole layers from a BERT-shaped encoder.

transformers-5 BERT (and RoBERTa, ELECTRA, XLM-R, which share its modules) computes heads with
`view(*shape, -1, head_size)`: the head count follows the width of Q/K/V, so a layer whose Q/K/V keep k·head_size
rows and whose attention output keeps the matching columns runs k heads with the unchanged module code. The FFN
width likewise follows intermediate.dense's rows / output.dense's columns. Only the *construction* of such a model
needs to know the shapes: `PruneSpec` records them and pruned_model.py rebuilds from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

# config.model_type of encoders whose layers are `encoder.layer[i].attention.self.{query,key,value}`,
# `attention.output.dense`, `intermediate.dense`, `output.dense` (BERT's module names).
BERT_SHAPED = ("bert", "roberta", "xlm-roberta", "electra")


@dataclass(frozen=True)
class LayerShape:
    heads: int  # attention heads kept
    ffn: int  # FFN (intermediate) width kept


def encoder_layers(model):
    """The encoder's layer list; a clear error for an architecture prune does not know."""
    mtype = getattr(model.config, "model_type", None)
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if mtype not in BERT_SHAPED or layers is None:
        raise ConfigError(f"prune supports BERT-shaped encoders ({', '.join(BERT_SHAPED)}); this model is "
                          f"'{mtype}'. Prune a model of one of those architectures.")
    return layers


def head_size(model) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


def layer_shapes(model) -> list[LayerShape]:
    d = head_size(model)
    return [LayerShape(l.attention.self.query.out_features // d, l.intermediate.dense.out_features)
            for l in encoder_layers(model)]


def is_uniform(shapes: list[LayerShape], config) -> bool:
    """True when plain from_pretrained can rebuild these shapes from config.json alone (every layer with all
    its heads, one FFN width)."""
    return all(s.heads == config.num_attention_heads for s in shapes) and len({s.ffn for s in shapes}) <= 1


def _rows(linear, keep):
    """A Linear keeping output rows `keep` (a LongTensor)."""
    import torch

    new = torch.nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None,
                          dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        new.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[keep])
    return new


def _cols(linear, keep):
    """A Linear keeping input columns `keep`; the bias is the whole output's and stays."""
    import torch

    new = torch.nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None,
                          dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def keep_heads(layer, heads: list[int], size: int) -> None:
    """Keep only attention heads `heads` (indices into the layer's current heads) of one encoder layer."""
    import torch

    if not heads:
        raise ConfigError("Every layer must keep at least one attention head.")
    idx = torch.tensor([h * size + i for h in sorted(heads) for i in range(size)], dtype=torch.long)
    att = layer.attention.self
    att.query, att.key, att.value = _rows(att.query, idx), _rows(att.key, idx), _rows(att.value, idx)
    att.num_attention_heads, att.all_head_size = len(heads), len(heads) * size
    layer.attention.output.dense = _cols(layer.attention.output.dense, idx)


def keep_neurons(layer, neurons: list[int]) -> None:
    """Keep only FFN neurons `neurons` of one encoder layer."""
    import torch

    if not neurons:
        raise ConfigError("Every layer must keep at least one FFN neuron.")
    idx = torch.tensor(sorted(neurons), dtype=torch.long)
    layer.intermediate.dense = _rows(layer.intermediate.dense, idx)
    layer.output.dense = _cols(layer.output.dense, idx)


def keep_layers(model, kept: list[int]) -> None:
    """Keep only encoder layers `kept` (in their order); config.num_hidden_layers follows."""
    import torch

    layers = encoder_layers(model)
    model.base_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in sorted(kept)])
    model.config.num_hidden_layers = len(kept)


def apply_plan(model, layers_kept: list[int], heads: dict[int, list[int]], neurons: dict[int, list[int]]) -> None:
    """Shrink `model` in place: `heads`/`neurons` map an original layer index to the units it keeps (absent:
    all), then only `layers_kept` remain."""
    size = head_size(model)
    layers = encoder_layers(model)
    for i in layers_kept:
        if i in heads and len(heads[i]) < layers[i].attention.self.query.out_features // size:
            keep_heads(layers[i], heads[i], size)
        if i in neurons and len(neurons[i]) < layers[i].intermediate.dense.out_features:
            keep_neurons(layers[i], neurons[i])
    if len(layers_kept) < len(layers):
        keep_layers(model, layers_kept)


def reshape_to(model, shapes: list[LayerShape]) -> None:
    """Give a freshly built (full-shape) model the recorded per-layer shapes; weights are loaded afterwards."""
    layers = encoder_layers(model)
    if len(layers) != len(shapes):
        raise ConfigError(f"The pruning spec lists {len(shapes)} layers but config.json has {len(layers)}; the "
                          "artifact is inconsistent. Re-create it with deploylm prune.")
    apply_plan(model, list(range(len(layers))), {i: list(range(s.heads)) for i, s in enumerate(shapes)},
               {i: list(range(s.ffn)) for i, s in enumerate(shapes)})


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
