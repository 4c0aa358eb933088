"""How ORT int8 weights are stored, measured: on tiny random BERTs (the unit tests' models) and on one real MiniLM
FFN matmul, the max |difference| to fp32 of each storage, next to onnx's exact-integer reference evaluator.

    python benchmarks/int8_weight_storage.py [--seeds 3,0,1] [--minilm runs/dev/sst2-small-lr1e-4]

Storages: s8 (symmetric int8, the VNNI recipe), s8 -> u8 (+128, optimize/onnx_uint8_weights.py), onnxruntime's
own u8 (asymmetric per channel). On a CPU without VNNI, onnxruntime's s8 kernel saturates; the exact reference
shows what the integers specify. Prints a table; writes nothing."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


class Graph:
    """A runner over an ONNX file: onnxruntime, or onnx's reference evaluator (exact integer semantics)."""

    def __init__(self, path, exact=False):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        self.input_names = [i.name for i in model.graph.input]
        if exact:
            from onnx.reference import ReferenceEvaluator

            for o in model.opset_import:  # the reference implements DequantizeLinear from opset 19 on
                if o.domain in ("", "ai.onnx"):
                    o.version = 21
            self.session = ReferenceEvaluator(model)
        else:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, feeds):
        return {"logits": self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]}


def storages(src: Path, d: Path) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from deploylm.optimize.onnx_uint8_weights import load_with_uint8_weights

    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    out = {"s8": d / "s8.onnx", "ort-u8": d / "u8.onnx", "s8->u8": d / "s8u8.onnx"}
    quantize_dynamic(str(src), str(out["s8"]), per_channel=True, weight_type=QuantType.QInt8, extra_options=extra)
    quantize_dynamic(str(src), str(out["ort-u8"]), per_channel=True, weight_type=QuantType.QUInt8, extra_options=extra)
    onnx.save(load_with_uint8_weights(out["s8"])[0], str(out["s8->u8"]))
    return out


def tiny_models(seeds: list[int], root: Path) -> None:
    from conftest import build_tiny_artifact
    from deploylm.evaluation import load_tokenizer
    from deploylm.optimize.common import check_supported
    from deploylm.optimize.export_onnx import build_onnx_files
    from deploylm.optimize.verify import REAL_TEXTS, compare, random_batches, text_batches

    print("| tiny BERT seed | storage | run by | max abs diff, random inputs | real texts |\n|---|---|---|---|---|")
    for seed in seeds:
        art = build_tiny_artifact(root / f"cls{seed}", labels=["0", "1"], seed=seed)
        d = root / f"onnx{seed}"
        d.mkdir()
        build_onnx_files(art, d, None, check_supported(art))
        parent = Graph(d / "model.onnx")
        tok = load_tokenizer(art)
        rnd = random_batches(tok.vocab_size, parent.input_names, 0, max_len=48, cls_id=tok.cls_token_id,
                             sep_id=tok.sep_token_id)
        real = text_batches(REAL_TEXTS, tok, parent.input_names, 64)
        for name, path in storages(d / "model.onnx", d).items():
            for exact in (False, True):
                v = Graph(path, exact)
                a, b = compare(parent, v, rnd, 1.0), compare(parent, v, real, 1.0)
                print(f"| {seed} | {name} | {'reference' if exact else 'onnxruntime'} | {a['max_abs_diff']:.4f} | "
                      f"{b['max_abs_diff']:.4f} |", flush=True)


def one_matmul(artifact: Path, root: Path) -> None:
    """One real FFN weight, random activations (with and without outlier features, as transformers have)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    weights = load_file(str(artifact / "model.safetensors"))
    w = next(v for k, v in weights.items() if "intermediate.dense.weight" in k).T.astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, w.shape[1]])],
                          [numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "mm.onnx"))
    paths = storages(root / "mm.onnx", root)
    print("\n| one MiniLM FFN matmul | storage | run by | max abs diff to fp32 |\n|---|---|---|---|")
    for label, scale in (("no outliers", 1.0), ("3 outlier features x8", 8.0)):
        x = np.random.default_rng(0).standard_normal((64, w.shape[0])).astype(np.float32)
        x[:, :3] *= scale
        ref = x @ w
        for name, path in paths.items():
            for exact in (False, True):
                y = Graph(path, exact).run({"x": x})["logits"]
                print(f"| {label} | {name} | {'reference' if exact else 'onnxruntime'} | {np.abs(y - ref).max():.4f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="3,0,1")
    ap.add_argument("--minilm", default=str(ROOT / "runs/dev/sst2-small-lr1e-4"),
                    help="a fine-tuned MiniLM artifact (README: deploylm finetune ... --output runs/dev/...)")
    args = ap.parse_args()
    from deploylm.machine import simd
    from deploylm.quiet import library_noise_to

    print(f"CPU vector extension: {simd()}\n")
    with tempfile.TemporaryDirectory() as tmp, library_noise_to(Path(tmp) / "noise.log"):
        tiny_models([int(s) for s in args.seeds.split(",")], Path(tmp))
        if Path(args.minilm, "model.safetensors").is_file():
            one_matmul(Path(args.minilm), Path(tmp))
        else:
            print(f"\n(no {args.minilm}: the real-matmul table is skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
