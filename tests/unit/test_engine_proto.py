"""The committed gRPC modules match open_inference.proto, and the messages are wire-compatible with
Triton's own generated ones (tritonclient), field by field."""

from __future__ import annotations

from pathlib import Path

from deploylm.serving.proto import generate


def test_committed_grpc_code_is_generated_from_the_proto(tmp_path):
    generate.generate(tmp_path)
    for name in ("open_inference_pb2.py", "open_inference_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (generate.HERE / name).read_text(), (
            f"{name} is stale: run `python -m deploylm.serving.proto.generate`")


def test_messages_match_tritons_field_numbers_and_types():
    from tritonclient.grpc import service_pb2 as triton

    from deploylm.serving.proto import open_inference_pb2 as ours

    def fields(desc):
        return {f.name: (f.number, f.type, f.is_repeated) for f in desc.fields}

    checked = 0
    for name, desc in ours.DESCRIPTOR.message_types_by_name.items():
        theirs = triton.DESCRIPTOR.message_types_by_name[name]
        assert fields(desc) == fields(theirs), name
        for nested in desc.nested_types:
            assert fields(nested) == fields(theirs.nested_types_by_name[nested.name]), f"{name}.{nested.name}"
        checked += 1
    assert checked == 14
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert theirs.methods_by_name[method.name].input_type.full_name == method.input_type.full_name


def test_request_bytes_round_trip_through_tritons_classes():
    from tritonclient.grpc import service_pb2 as triton

    from deploylm.serving.proto import open_inference_pb2 as ours

    req = ours.ModelInferRequest(model_name="m", id="7", raw_input_contents=[b"\x02\x00\x00\x00hi"])
    req.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    parsed = triton.ModelInferRequest.FromString(req.SerializeToString())
    assert (parsed.model_name, parsed.id, parsed.inputs[0].name, list(parsed.inputs[0].shape)) == ("m", "7", "TEXT", [1])
    assert Path(generate.HERE / generate.PROTO).is_file()
