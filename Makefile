# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use;
# the stamp file means a second run does not reinstall unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-unit test-slow test-integration lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evtwin demo

# Modules that start Ray, Serve or a gRPC server. Each runs in its own pytest process: a Ray actor
# restart in a long-lived test process that has already run many other modules was seen to hang.
INTEGRATION_MODULES = $(shell grep -l "mark.integration" tests/test_*.py)

# Lint and the architecture contract first, then unit tests, the slow end-to-end ones, and the integration
# modules (make runs prerequisites in order without -j).
test: lint test-unit test-slow test-integration

lint: $(STAMP)
	$(BIN)/ruff check .

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow" tests configs simulation training twins serving

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow and not integration" tests

test-integration: $(STAMP)
	@for module in $(INTEGRATION_MODULES); do \
		$(BIN)/python -m pytest -m integration $$module; rc=$$?; \
		if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	done

clean:
	rm -rf runs .pytest_cache
