"""Each task's wire encoding (tasks/wire.py) from hand-made predictions, and the OIP plumbing that moves any
task's tensors (serving/oip.py): arrays of any rank, several BYTES inputs (the shape extractive QA will need)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from deploylm.errors import RequestError
from deploylm.serving import oip
from deploylm.tasks import get_task
from deploylm.tasks.base import Task
from deploylm.tasks.wire import TensorSpec


def test_classification_answers_label_bytes_and_score_fp32():
    task = get_task("classification")
    assert [(t.name, t.datatype, t.shape) for t in task.oip_outputs()] == [("LABEL", "BYTES", (-1,)),
                                                                            ("SCORE", "FP32", (-1,))]
    values = task.oip_values([{"label": "positive", "score": 0.75}, {"label": "n\u00e9gatif", "score": 0.5}])
    assert values["LABEL"].dtype == object and list(values["LABEL"]) == [b"positive", "n\u00e9gatif".encode()]
    assert values["SCORE"].dtype == np.float32 and values["SCORE"].tolist() == [0.75, 0.5]


def test_token_classification_answers_one_json_list_per_text():
    task = get_task("token-classification")
    assert [t.metadata() for t in task.oip_outputs()] == [{"name": "ENTITIES", "datatype": "BYTES", "shape": [-1]}]
    ent = {"entity": "PER", "text": "John", "start": 0, "end": 4, "score": 0.9}
    values = task.oip_values([{"tags": ["B-PER"], "entities": [ent]}, {"tags": ["O"]}])
    assert [json.loads(b) for b in values["ENTITIES"]] == [[ent], []]


def test_feature_extraction_answers_an_fp32_matrix_with_the_models_width():
    task = get_task("feature-extraction")
    assert task.oip_outputs({"sentence_embedding": (3,)})[0].metadata() == {
        "name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 3]}
    assert task.oip_outputs()[0].shape == (-1, -1)  # width not known: any
    preds = [{"embedding": [0.5, -0.25, 1.0], "dimensions": 3}, {"embedding": [0.0, 2.0, -1.5], "dimensions": 3}]
    emb = task.oip_values(preds)["EMBEDDING"]
    assert emb.dtype == np.float32 and emb.shape == (2, 3)
    assert emb.tolist() == [[0.5, -0.25, 1.0], [0.0, 2.0, -1.5]]
    assert task.embedding_output == "sentence_embedding" and get_task("classification").embedding_output is None


def test_decoders_list_no_oip_outputs():
    """engine.submit refuses decoders over OIP (400); their metadata must still answer, with no outputs."""
    assert get_task("text-generation").oip_outputs() == []


@pytest.mark.parametrize("name", ["classification", "token-classification", "feature-extraction"])
def test_text_tasks_read_one_text_input(name):
    task = get_task(name)
    assert task.oip_inputs == (TensorSpec("TEXT", "BYTES", (-1,)),)
    assert task.inputs_from_oip({"TEXT": ["a", "b"]}) == ["a", "b"]
    assert task.inputs_from_json(["a", "b"]) == ["a", "b"]
    with pytest.raises(RequestError, match=r"inputs\[1\] must be a string, got int") as info:
        task.inputs_from_json(["a", 7])
    assert info.value.status == 400
    seen = []
    assert task.inputs_from_json(["x", "y"], lambda v, where: seen.append(where) or v.upper()) == ["X", "Y"]
    assert seen == ["inputs[0]", "inputs[1]"]


def test_numeric_tensors_of_any_rank_flatten_row_major():
    emb = np.array([[1.5, -2.0, 0.25], [3.0, 4.0, -0.5]], dtype=np.float32)
    assert oip.datatype_of(emb) == "FP32" and oip.shape_of(emb) == [2, 3]
    assert oip.to_json_data(emb) == [1.5, -2.0, 0.25, 3.0, 4.0, -0.5]
    assert oip.to_raw(emb) == struct.pack("<6f", 1.5, -2.0, 0.25, 3.0, 4.0, -0.5)
    ids = np.array([3, 9], dtype=np.int64)
    assert oip.datatype_of(ids) == "INT64" and oip.to_raw(ids) == struct.pack("<2q", 3, 9)
    assert oip.to_json_data(ids) == [3, 9]
    labels = np.array([b"ab", b"c"], dtype=object)
    assert oip.to_raw(labels) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c" and oip.to_json_data(labels) == ["ab", "c"]


class TwoTextTask(Task):
    """What extractive QA will look like on the wire: two BYTES inputs folded into one item each."""

    name = "two-texts"
    oip_inputs = (TensorSpec("QUESTION", "BYTES"), TensorSpec("CONTEXT", "BYTES"))

    def inputs_from_oip(self, tensors):
        return [{"question": q, "context": c} for q, c in zip(tensors["QUESTION"], tensors["CONTEXT"])]


QA = TwoTextTask.oip_inputs


def test_several_inputs_are_checked_by_name_and_size():
    assert oip.check_inputs([("CONTEXT", "BYTES", [2]), ("QUESTION", "BYTES", [2, 1])], QA) == [2, 2]
    bad = [
        ([("QUESTION", "BYTES", [1])], "exactly 2 input tensors ('QUESTION', 'CONTEXT'), got 1"),
        ([("QUESTION", "BYTES", [1]), ("QUESTION", "BYTES", [1])], "'QUESTION' is sent twice"),
        ([("QUESTION", "BYTES", [1]), ("TEXT", "BYTES", [1])], "Unknown input tensor 'TEXT'"),
        ([("QUESTION", "BYTES", [1]), ("CONTEXT", "BYTES", [2])], "sizes differ ('QUESTION' 1, 'CONTEXT' 2)"),
        ([("QUESTION", "FP32", [1]), ("CONTEXT", "BYTES", [1])], "datatype BYTES"),
    ]
    for headers, words in bad:
        with pytest.raises(RequestError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
            oip.check_inputs(headers, QA)
        assert info.value.status == 400


def test_binary_inputs_follow_the_header_in_input_order():
    from deploylm.serving.http_app import _parse_infer

    q, c = oip.join_bytes_tensor([b"who?"]), oip.join_bytes_tensor(["Ren\u00e9 wrote it.".encode()])
    header = json.dumps({"inputs": [
        {"name": "QUESTION", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(q)}},
        {"name": "CONTEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(c)}}]}).encode()
    _, texts, _, _ = _parse_infer(header + q + c, {"inference-header-content-length": str(len(header))}, QA)
    assert texts == {"QUESTION": ["who?"], "CONTEXT": ["Ren\u00e9 wrote it."]}
    assert TwoTextTask().inputs_from_oip(texts) == [{"question": "who?", "context": "Ren\u00e9 wrote it."}]
    short = header + q + c[:-3]  # the second tensor claims more than is left
    with pytest.raises(RequestError, match="binary_data_size"):
        _parse_infer(short, {"inference-header-content-length": str(len(header))}, QA)


def test_text_limit_refuses_or_cuts_and_counts_characters():
    from deploylm.serving.limits import Limits

    check = Limits(max_text_chars=5).text_limit(max_length=8)
    assert check("abc", "inputs[0]") == "abc" and check.chars == 3
    with pytest.raises(RequestError, match=r"inputs\[1\] has 6 characters; the limit is 5"):
        check("abcdef", "inputs[1]")
    cut = Limits(max_text_chars=50, truncate=True).text_limit(max_length=1)
    assert cut("x" * 150, "inputs[0]") == "x" * 100 and cut.chars == 100  # cut to max_length * 100 characters
