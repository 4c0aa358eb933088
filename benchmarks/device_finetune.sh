#!/usr/bin/env bash
# Full-data fine-tuning on a lent GPU machine (the `device` tool), when one is lent.
# The 2-core CPU machine needs hours for 3 epochs of SST-2; the GPU takes minutes. Weights travel as
# fp16 (the tool carries 64 MiB at most); training runs in fp32 from them. The trained SST-2 weights
# come back in fp16 chunks and are re-assembled and re-evaluated on the CPU machine
# (benchmarks/import_device_model.py), so every metric in BENCHMARKS.md is measured here.
# Carried folder .devcarry/ (git-ignored, deleted after use; never committed):
#   minilm/  the packaged MiniLM with model.safetensors converted to fp16 (config + tokenizer files as is)
#   data/    copies of ../shared/data/{sst2,conll2003}
#   whl/     cp312 wheels the GPU image lacks: pydantic, pydantic-core, annotated-types, typing-inspection,
#            typing-extensions, seqeval (built with `pip wheel --no-deps seqeval==1.2.2`)
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devcarry/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src DEPLOYLM_DATA_DIR=$PWD/.devcarry/data HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export BENCH_MODEL=$PWD/.devcarry/minilm BENCH_RUNS=/tmp/runs
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
BENCH_JOBS=${BENCH_JOBS:-sst2-minilm,conll-minilm} python3 benchmarks/finetune.py 2>&1 \
  | grep -v "it/s\]" > "$OUT/train.log" || true
grep -E "MANIFEST|Error" "$OUT/train.log" | cut -c1-300
grep -oE "'eval_(accuracy|f1)': '[0-9.na]+'" "$OUT/train.log" | tr '\n' ' '
python3 - <<'PY'
import json, os
from safetensors.torch import load_file, save_file
man = json.load(open("/tmp/runs/sst2-minilm/manifest.json"))
json.dump(man, open(os.environ["OUT"] + "/sst2-manifest.json", "w"), indent=1)
save_file({k: v.half() for k, v in load_file("/tmp/runs/sst2-minilm/model.safetensors").items()}, "/tmp/w16.safetensors")
PY
split -b 15M -d /tmp/w16.safetensors "$OUT/sst2-w16.part"
ls -la "$OUT"
