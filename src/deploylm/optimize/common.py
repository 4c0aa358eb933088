"""What every optimisation shares: which models are supported, where a variant's data comes from,
and the non-weight files (tokenizer, config.json) an ONNX artifact keeps beside model.onnx."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..artifacts import Artifact
from ..errors import ConfigError, ModelError

SUPPORTED_TASKS = ("classification", "token-classification", "feature-extraction", "extractive-qa",
                   "relation-classification", "multi")
# config.model_type -> onnxruntime.transformers.optimizer model_type. These share BERT's graph
# shape, so ORT's BERT fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) apply.
SUPPORTED_ARCHS = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert"}
# Files copied from the parent so evaluation.load_tokenizer and AutoConfig work on the ONNX dir.
AUX_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "vocab.json", "merges.txt", "sentencepiece.bpe.model", "added_tokens.json",
             "multi_config.json")  # a multi-task model's heads: its outputs' names and labels (tasks/multi.py)


def model_config(art: Artifact) -> dict:
    path = art.path / "config.json"
    if not path.is_file():
        raise ModelError(f"Artifact {art.path} has no config.json, so its architecture is unknown.")
    return json.loads(path.read_text())


def check_supported(art: Artifact) -> dict:
    """The parent's config.json if deploylm can export/fuse/quantise it; else a clear error."""
    if art.task not in SUPPORTED_TASKS:
        raise ConfigError(f"Artifact {art.path} is a '{art.task}' model; optimisation supports the tasks "
                          f"{', '.join(SUPPORTED_TASKS)}.")
    cfg = model_config(art)
    mtype = cfg.get("model_type")
    if mtype not in SUPPORTED_ARCHS:
        raise ConfigError(f"Artifact {art.path} is a '{mtype}' model; ONNX export and fusion support the "
                          f"architectures {', '.join(SUPPORTED_ARCHS)} (BERT-shaped encoders).")
    return cfg


def copy_aux_files(src: Path, dst: Path) -> None:
    for name in AUX_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def root_transformers_parent(art: Artifact) -> Artifact:
    """The nearest ancestor in transformers format (the model a variant is compared against)."""
    if art.format == "transformers":
        return art
    for parent in art.lineage():
        p = Path(parent.get("path", ""))
        if (p / "manifest.json").is_file():
            cand = Artifact.open(p, verify=False)
            if cand.format == "transformers":
                return cand
    raise ConfigError(f"Artifact {art.path} has no PyTorch (transformers-format) ancestor on disk to compare with.")


def task_data(art: Artifact, data: str | None) -> str:
    """--data if given, else the dataset the artifact (or an ancestor) was fine-tuned on."""
    if data:
        return data
    chain = [art.manifest] + [json.loads((Path(p["path"]) / "manifest.json").read_text())
                              for p in art.lineage() if (Path(p.get("path", "")) / "manifest.json").is_file()]
    for manifest in chain:
        found = (manifest.get("config") or {}).get("data")
        if found:
            return found
    raise ConfigError(f"No dataset is recorded in the lineage of {art.path}; pass --data DATA "
                      "(a dataset dir or alias such as sst2) so the variant can be evaluated and calibrated.")
