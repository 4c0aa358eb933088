"""Turn the SST-2 model trained by benchmarks/device_finetune.sh (fp16 chunks from the GPU machine)
back into a deploylm artifact at runs/bench/sst2-minilm, and re-evaluate it on this CPU machine.

    python benchmarks/import_device_model.py /work/.device/N
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(src: Path) -> None:
    import torch
    from safetensors.torch import load
    from transformers import AutoTokenizer

    from deploylm.artifacts import create_artifact
    from deploylm.config import EvalConfig
    from deploylm.evaluation import evaluate
    from deploylm.models import resolve_model
    from deploylm.tasks import get_task

    manifest = json.loads((src / "sst2-manifest.json").read_text())
    blob = b"".join(p.read_bytes() for p in sorted(src.glob("sst2-w16.part*")))
    state = {k: v.to(torch.float32) for k, v in load(blob).items()}
    base = resolve_model("minilm-l6")
    task = get_task("classification")
    model = task.load_model(base.location, manifest["labels"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise SystemExit(f"weights do not fit: missing={missing} unexpected={unexpected}")
    tok = AutoTokenizer.from_pretrained(base.location)
    cfg = {**manifest["config"], "model": "minilm-l6"}
    training = {**manifest["training"], "note": "trained on a lent H200 GPU (benchmarks/device_finetune.sh); "
                "weights returned in fp16 and restored to fp32 here", "gpu_dev_metrics": manifest["metrics"]}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    out = ROOT / "runs" / "bench" / "sst2-minilm"
    art = create_artifact(out, write, stage="finetune", config=cfg, parent=base.as_parent(), task="classification",
                          labels=manifest["labels"], max_length=manifest["max_length"], extra={"training": training},
                          overwrite=True)
    rec = evaluate(art, EvalConfig(data="sst2"))
    print(out, rec)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
