# finpulse: `make demo` and `make test` are the two commands; each sets up .venv on its own.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/finpulse demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check finpulse streams models sinks tests

bench: $(STAMP)
	$(BIN)/finpulse bench pipeline
	$(BIN)/finpulse model bench

clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache
