"""What every task provides, and the batched inference loop they share (through a Runner)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..runtime.batching import length_batches, pad_batch
from .wire import TEXT_INPUT, TensorSpec, TextCheck, plain_text


class Task:
    name: str
    primary_metric: str
    auto_model: str  # transformers Auto class name
    # The model outputs deploylm reads, by their transformers names: what runners return, what an ONNX export
    # names its graph outputs, what parity compares. Extractive QA (start_logits, end_logits) or embeddings
    # (sentence_embedding) declare their own; the classifiers read only logits.
    output_names: tuple[str, ...] = ("logits",)
    # What fine-tuning picks its best checkpoint by (a key of trainer_metrics); None: primary_metric.
    selection_metric: str | None = None
    # Those of output_names with a row per token (batch and sequence axes); the others have a row per input.
    token_level_outputs: tuple[str, ...] = ()
    # One input encode() accepts, for a server's warm-up forwards before it reports ready.
    warmup_input: object = "warm-up text for the model"

    def configured(self, location) -> "Task":
        """This task as the artifact (or model directory) at `location` has it. Tasks whose outputs are the
        artifact's own (multi: one per head, tasks/multi.py) read them from there; the others are the same
        everywhere and return themselves. Call through tasks.task_for(artifact)."""
        return self

    # --- training -------------------------------------------------------------------
    def label_set(self, targets: list) -> list[str]:
        raise NotImplementedError

    def train_features(self, examples, tokenizer, label2id: dict[str, int], max_length: int) -> list[dict]:
        raise NotImplementedError

    def collator(self, tokenizer):
        raise NotImplementedError

    def prepare(self, tokenizer, model) -> None:
        """Called once by finetune after the tokenizer and model are loaded, before any text is encoded: a task
        that adds tokens (relation-classification's entity markers) grows the tokenizer and the embeddings here."""

    def trainer_metrics(self, id2label: dict[int, str]):
        raise NotImplementedError

    # --- inference ------------------------------------------------------------------
    def encode(self, inputs: Sequence, tokenizer, max_length: int) -> tuple[list[dict], list[Any]]:
        """-> (features: one dict of token lists per input, aux: what decode needs per input)"""
        raise NotImplementedError

    def decode(self, logits: np.ndarray, aux: Any, id2label: dict[int, str]) -> Any:
        raise NotImplementedError

    def parity_texts(self, examples: list | None = None) -> list[str]:
        """Texts the export/quantize parity check feeds (plain tokenizer) besides random ids and plain sentences:
        a task whose model reads more than plain text (entity markers) gives texts that exercise that, from
        `examples` (inputs of the gate's dev split) where given."""
        return []

    def score(self, predictions: list, targets: list) -> dict[str, float]:
        raise NotImplementedError

    def check_targets(self, targets: list, labels: list[str], source: str) -> None:
        raise NotImplementedError

    def show(self, item, prediction) -> str:
        """One prediction as a line of `deploylm predict` (all of it with --json)."""
        import json

        return f"{json.dumps(prediction)}  {item}"

    # --- the wire (serving): see tasks/wire.py ---------------------------------------
    # Open Inference Protocol inputs: one text per item by default. A task with several (extractive QA:
    # QUESTION + CONTEXT) lists them and overrides inputs_from_oip / inputs_from_json.
    oip_inputs: tuple[TensorSpec, ...] = (TensorSpec(TEXT_INPUT, "BYTES"),)
    # The output whose width is a sentence embedding's dimension, for tasks the OpenAI /v1/embeddings route
    # serves (their predictions are vectors: embedding_vectors); None for every other task.
    embedding_output: str | None = None

    def oip_outputs(self, shapes: dict[str, tuple[int, ...]] | None = None) -> list[TensorSpec]:
        """The output tensors' specs; `shapes`: each model output's per-item shape as the served model
        reported it (serving/engine.py), for outputs whose size depends on the model."""
        raise NotImplementedError(f"Task '{self.name}' has no Open Inference Protocol outputs.")

    def oip_values(self, preds: list) -> dict[str, np.ndarray]:
        """Predictions (one per item) -> {output name: array with the items on its first axis}."""
        raise NotImplementedError(f"Task '{self.name}' has no Open Inference Protocol outputs.")

    def inputs_from_oip(self, tensors: dict[str, list[str]]) -> list:
        """The named BYTES input tensors, decoded to texts (each the same length) -> the request's items in
        /v1 JSON form; the server then checks them with inputs_from_json, as it checks a /v1 request."""
        return list(tensors[TEXT_INPUT])

    def inputs_from_json(self, items: list, text: TextCheck = plain_text) -> list:
        """The items of a /v1 predict request (a list, its size already checked) -> this task's inputs for
        encode. Every text goes through `text`, which refuses (RequestError 400) or cuts it."""
        return [text(item, f"inputs[{i}]") for i, item in enumerate(items)]

    def embedding_vectors(self, preds: list) -> np.ndarray:
        raise NotImplementedError(f"Task '{self.name}' does not produce embeddings.")

    # --- shared ---------------------------------------------------------------------
    def model_outputs(self, out) -> dict[str, np.ndarray]:
        """A transformers forward's output -> {name: float32 array} for each of output_names (what a Runner
        returns). float(): a bf16 (autocast) forward's outputs are widened, callers always see float32."""
        return {n: getattr(out, n).float().numpy() for n in self.output_names}

    def load_model(self, location: str, labels: list[str] | None = None, **kwargs):
        import torch
        import transformers

        auto = getattr(transformers, self.auto_model)
        # transformers 5 keeps the checkpoint's dtype by default; an fp16/bf16 checkpoint would then train
        # (and overflow) in half precision. Weights are fp32 here; reduced precision is a quantize stage.
        kwargs.setdefault("dtype", torch.float32)
        if labels is not None:
            kwargs.update(
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={l: i for i, l in enumerate(labels)},
                ignore_mismatched_sizes=True,
            )
        from ..compress.pruned_model import load_if_pruned  # per-layer shapes config.json cannot express

        pruned = load_if_pruned(auto, location, **kwargs)
        return pruned if pruned is not None else auto.from_pretrained(location, **kwargs)

    def output_rows(self, outputs: dict[str, np.ndarray], row: int, n_tokens: int) -> dict[str, np.ndarray]:
        """One feature's share of a batch's outputs: token-level ones cut to its n_tokens (padding dropped)."""
        return {k: (outputs[k][row, :n_tokens] if k in self.token_level_outputs else outputs[k][row])
                for k in self.output_names}

    def decode_rows(self, rows: list[dict[str, np.ndarray]], aux: list, id2label: dict[int, str]) -> list:
        """Every feature of one call (a request, a predict batch), in encode's order -> one prediction per input.
        Tasks that expand one input into several features (QA windows over a long context) fold them here;
        the others have a feature per input and decode each alone."""
        name = self.output_names[0]
        return [self.decode(r[name], a, id2label) for r, a in zip(rows, aux)]

    def predict(self, runner, tokenizer, inputs: Sequence, labels: list[str], max_length: int,
                batch_size: int = 32, progress=None) -> list:
        features, aux = self.encode(inputs, tokenizer, max_length)
        rows = run_features(self, runner, features, tokenizer.pad_token_id or 0, batch_size, progress)
        return self.decode_rows(rows, aux, dict(enumerate(labels)))


def require_texts(inputs: Sequence, task: str, also: tuple[type, ...] = ()) -> None:
    """Texts only (or the `also` types): a {"question", "context"} pair sent to a classifier says so plainly
    instead of failing inside the tokenizer."""
    for n, item in enumerate(inputs):
        if not isinstance(item, (str, *also)):
            raise DataError(f"Input {n}: a {task} model takes texts, not {type(item).__name__} "
                            "(questions with a context are for extractive-qa models).")


def run_features(task: Task, runner, features: list[dict], pad_id: int, batch_size: int,
                 progress=None) -> list[dict[str, np.ndarray]]:
    """Run every feature through the runner in length-sorted batches; return each feature's named outputs
    (task.output_rows) in input order."""
    out: list[dict | None] = [None] * len(features)
    for idx in length_batches(features, batch_size):
        batch = pad_batch([features[i] for i in idx], pad_id, runner.input_names)
        outputs = runner.run(batch)
        for row, i in enumerate(idx):
            out[i] = task.output_rows(outputs, row, len(features[i]["input_ids"]))
        if progress is not None:
            progress(len(idx))
    return out  # type: ignore[return-value]
