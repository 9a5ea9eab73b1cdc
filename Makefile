# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use;
# the stamp file means a second run does not reinstall unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-unit test-integration bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evtwin demo

test: $(STAMP)
	$(BIN)/python -m pytest tests configs simulation training twins serving

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" tests configs simulation training twins serving

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration tests

clean:
	rm -rf runs .pytest_cache
