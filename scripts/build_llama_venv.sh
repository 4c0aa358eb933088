#!/usr/bin/env bash
# The llama.cpp peer of the generation benchmark: llama-cpp-python compiled from source (no wheel is used,
# so ggml's CPU kernels are built for this machine's instruction set) in its own virtual environment.
# Idempotent: does nothing when the venv already imports llama_cpp. About 12 minutes on 2 cores.
#   scripts/build_llama_venv.sh [VENV]      (default benchmarks/.llama-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-benchmarks/.llama-venv}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PY="${PY:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "llama-cpp-python already in $VENV ($("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
    exit 0
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# GGML_NATIVE: -march=native for ggml-cpu (AVX2/FMA/F16C here); the peer runs where it was built.
# LLAVA_BUILD=OFF skips the multimodal library (mtmd: about half the compile); llama_cpp imports it lazily.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF}" FORCE_CMAKE=1 \
    "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__); print(llama_cpp.llama_print_system_info().decode())"
