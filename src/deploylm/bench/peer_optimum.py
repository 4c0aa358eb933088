"""Run INSIDE the peer's own virtual environment (optimum-onnx pins transformers<4.58, so it cannot
share deploylm's). Does what an Optimum user does for CPU int8 and nothing more:
ORTModelFor*.from_pretrained(export=True) -> ORTQuantizer + AutoQuantizationConfig.avx512_vnni
(dynamic, Optimum's default per_channel=False). Imports nothing from deploylm.

    python peer_optimum.py SOURCE_MODEL_DIR OUT_DIR TASK
"""

import json
import sys
import time


def main(src: str, out: str, task: str) -> None:
    import optimum.onnxruntime as ortopt
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    cls = {"classification": ortopt.ORTModelForSequenceClassification,
           "token-classification": ortopt.ORTModelForTokenClassification}[task]
    t0 = time.time()
    model = cls.from_pretrained(src, export=True)
    model.save_pretrained(f"{out}/fp32")
    t1 = time.time()
    quantizer = ortopt.ORTQuantizer.from_pretrained(f"{out}/fp32")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False)
    quantizer.quantize(save_dir=f"{out}/int8", quantization_config=qconfig)
    from importlib import metadata

    info = {"export_s": round(t1 - t0, 1), "quantize_s": round(time.time() - t1, 1),
            "per_channel": qconfig.per_channel, "format": str(qconfig.format), "mode": str(qconfig.mode),
            "versions": {p: metadata.version(p) for p in ("optimum-onnx", "optimum", "transformers", "torch",
                                                          "onnxruntime")}}
    with open(f"{out}/peer.json", "w") as fh:
        json.dump(info, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
