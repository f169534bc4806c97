# Every target does its own set-up: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= tiny

.PHONY: install serve generate test lint typecheck check openapi docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The API and its workers on this machine, jobs in ./data (SQLite). MODEL=kandinsky-2.2 for real weights.
serve: install
	$(BIN)/kandinsky-serve serve --model $(MODEL)

# A first image with no server and no download: make generate PROMPT="a red fox"
PROMPT ?= a moss covered astronaut
generate: install
	$(BIN)/kandinsky-serve generate "$(PROMPT)" --model $(MODEL) --width 512 --height 512 -o out.png

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

# The committed API description and configuration reference; tests fail when they are stale.
openapi: install
	$(BIN)/python -m kandinsky_serve.api.openapi_export

docs: openapi
	$(BIN)/python -m kandinsky_serve.settings_doc > docs/configuration.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
