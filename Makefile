# Everything a new user needs, from a clone with only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
INBOX  ?= inbox
OUTPUT ?= downloads
ARGS   ?=

.PHONY: run test lint install install-service bench clean

# The runtime environment: the project and its dependencies, nothing more.
$(BIN)/imgdl-watch: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test environment adds the dev extras; the stamp remembers that it is done.
$(VENV)/.dev-installed: pyproject.toml $(BIN)/imgdl-watch
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/imgdl-watch
	$(BIN)/imgdl-watch run --inbox $(INBOX) --output $(OUTPUT) $(ARGS)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Installs the command for the current user, outside any virtual environment.
install:
	$(PYTHON) -m pip install .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
