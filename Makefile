# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py sfu/_lane.c sfu/_reader.c sfu/_lane.h | $(BIN)/python
	$(BIN)/pip install -e '.[test,bench,cluster]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/invigil serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m load_tests.bench --students 8 --surveillants 1 --seconds 30 --mode forward --json bench.json

clean:
	rm -rf $(VENV) *.egg-info
