# Every target does its own set-up: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
MODEL ?= tiny
MODELS ?= tiny,tiny-2.1
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install lock system-deps serve generate keys test lint typecheck check openapi docs clean

install: $(STAMP)

# Exactly the versions in the lock, nothing resolved afresh: a new machine installs what CI tested.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $$(grep -E '^pip==' $(LOCK))
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/python scripts/check_lock.py
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve after editing the dependencies in pyproject.toml (pins already in the lock are kept
# where they still fit; `make lock UPGRADE=1` takes the newest releases).
lock:
	test -x $(BIN)/pip-compile || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q $$(grep -E '^pip(-tools)?==' $(LOCK)); }
	$(BIN)/pip-compile -q $(if $(UPGRADE),--upgrade) --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	# this machine's CPU wheel resolves as torch==X+cpu; the bare pin is what a GPU machine needs
	sed -i -E 's/^(torch==[^+ ]+)\+[a-z0-9.]+$$/\1/' $(LOCK)
	$(BIN)/python scripts/check_lock.py

# redis-server, Chromium and g++ for the tests (Debian packages; installs what is missing)
system-deps:
	bash scripts/system-deps.sh

# The API and its workers on this machine, jobs in ./data (SQLite): the tiny 2.2 and 2.1 models, one
# worker each (the first is the default). MODELS=kandinsky-2.2 (or kandinsky-2.2,kandinsky-2.1) for real weights.
serve: install
	KS_MODELS=$(MODELS) $(BIN)/kandinsky-serve serve --host $(HOST) --port $(PORT)

# A first image with no server and no download: make generate PROMPT="a red fox"
PROMPT ?= a moss covered astronaut
generate: install
	$(BIN)/kandinsky-serve generate "$(PROMPT)" --model $(MODEL) --width 512 --height 512 -o out.png

# API keys for the server in ./data: make keys ARGS="create --name alice --credits 100"
ARGS ?= list
keys: install
	$(BIN)/kandinsky-serve keys $(ARGS)

test: install system-deps
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
