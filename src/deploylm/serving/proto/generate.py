"""Regenerate open_inference_pb2.py / _pb2_grpc.py from open_inference.proto (grpcio-tools).

The generated modules are committed so that serving needs grpcio + protobuf only, not the compiler;
tests/unit/test_engine_proto.py checks that they are up to date with the .proto."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "open_inference.proto"


def generate(out_dir: Path = HERE) -> None:
    from grpc_tools import protoc

    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {HERE / PROTO}")
    # grpc_tools writes `import open_inference_pb2`: make it package-relative.
    grpc_file = out_dir / "open_inference_pb2_grpc.py"
    text = grpc_file.read_text().replace("import open_inference_pb2 as", "from . import open_inference_pb2 as")
    grpc_file.write_text(text)
    # Own descriptor pool, not protobuf's process-wide default: tritonclient (and Triton/KServe code) register
    # the same public names (inference.ModelInferRequest, ...), and two files defining one symbol in the
    # default pool is a hard error. Wire format is unchanged, so clients and server still interoperate.
    pb2_file = out_dir / "open_inference_pb2.py"
    text = pb2_file.read_text()
    if "_descriptor_pool.Default()" not in text:
        raise SystemExit("generated module changed shape: update generate.py")
    pb2_file.write_text(text.replace("_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()"))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
