# The two commands of the README. Both create .venv and install the project.
#   make run        start labelsd watching ./inbox (WATCH=dir, WEIGHTS=file, DB=path|url)
#   make test       run the whole test suite (installs the Debian packages tests need)
# And for developers:
#   make test-fast  the suite without TensorFlow, PostgreSQL or user namespaces (under 2 min)
#   make lint       ruff over the code, the tests and the benchmarks

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
WATCH   ?= ./inbox
WEIGHTS ?=
DB      ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast lint venv test-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

run: venv
	mkdir -p "$(WATCH)"
	$(BIN)/labelsd --watch "$(WATCH)" $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(DB),--db "$(DB)")

test-deps:
	bash scripts/install-test-deps.sh

test: venv test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not tf and not pg and not userns" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check daemon cli tests bench scripts

bench: venv
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/query.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
