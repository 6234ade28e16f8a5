# The two commands of the README. Both create .venv and install the project.
#   make run        start labelsd watching ./inbox (WATCH=dir, WEIGHTS=file, DB=path|url);
#                   installs only what running needs, prints the line to query it once ready
#   make test       run the whole test suite (installs the Debian packages tests need)
# To have `labels` and `labelsd` on your PATH (the way pipx installs):
#   make install    their own venv in ~/.local/share/labelsd, the commands in ~/.local/bin
#   make uninstall  removes both again (your library and config stay)
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

# `make install`: EXTRAS=gpu or EXTRAS=postgres for the optional parts.
INSTALL_DIR ?= $(HOME)/.local/share/labelsd
BINDIR      ?= $(HOME)/.local/bin
EXTRAS      ?=

.PHONY: run test test-fast lint venv test-deps bench clean install uninstall

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# What running needs, no test extras (reinstalled whenever pyproject.toml changes).
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

run: $(VENV)/.installed-run
	mkdir -p "$(WATCH)"
	@$(BIN)/python scripts/make_run.py $(if $(DB),--db "$(DB)") -- \
	  $(BIN)/labelsd --watch "$(WATCH)" $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(DB),--db "$(DB)")

install:
	$(PYTHON) -m venv "$(INSTALL_DIR)/venv"
	"$(INSTALL_DIR)/venv/bin/python" -m pip install --quiet --upgrade pip
	"$(INSTALL_DIR)/venv/bin/python" -m pip install --quiet "$(CURDIR)$(if $(EXTRAS),[$(EXTRAS)])"
	mkdir -p "$(BINDIR)"
	ln -sfn "$(INSTALL_DIR)/venv/bin/labelsd" "$(BINDIR)/labelsd"
	ln -sfn "$(INSTALL_DIR)/venv/bin/labels" "$(BINDIR)/labels"
	@case ":$$PATH:" in \
	  *":$(BINDIR):"*) echo "installed: labels and labelsd in $(BINDIR)";; \
	  *) echo "installed: labels and labelsd in $(BINDIR), which is not on your PATH yet:"; \
	     echo "  log in again (Debian's and Ubuntu's ~/.profile add ~/.local/bin once it exists)"; \
	     echo "  or add this line to ~/.bashrc:  export PATH=\"$(BINDIR):\$$PATH\"";; \
	esac

uninstall:
	for cmd in labels labelsd; do \
	  case "$$(readlink "$(BINDIR)/$$cmd")" in "$(INSTALL_DIR)"/*) rm -f "$(BINDIR)/$$cmd";; esac; \
	done
	rm -rf "$(INSTALL_DIR)/venv"

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
	$(BIN)/python bench/web.py --images 100000

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
