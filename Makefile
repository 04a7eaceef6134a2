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

# The Firefox tests' driver (puppeteer-core; tests/firefox.py). Without npm the Firefox tests
# skip on a developer's machine and fail in CI (.ci/run installs nodejs and npm).
DRIVER := tests/driver
$(DRIVER)/node_modules/.installed: $(DRIVER)/package.json $(DRIVER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(DRIVER) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund && touch node_modules/.installed; \
	else echo "make: npm is missing: the Firefox tests will not run (apt-get install nodejs npm)"; fi

install: $(VENV)/.installed $(DRIVER)/node_modules/.installed

run: install
	$(BIN)/invigil serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m load_tests.bench --students 8 --surveillants 1 --seconds 30 --mode forward --json bench.json

clean:
	rm -rf $(VENV) *.egg-info
