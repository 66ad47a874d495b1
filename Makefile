# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-retrieval bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exact: a looser resolution would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
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
