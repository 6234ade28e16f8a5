# The two commands of the README. Both create .venv and install the project.
#   make run        start labelsd watching ./inbox (WATCH=dir, MODEL=inception_v3|efficientnet_lite0,
#                   WEIGHTS=file, DB=path|url, EXTRAS=...); installs only what running needs,
#                   prints the line to query it once ready. With no model chosen and no
#                   InceptionV3 weights to be had (offline), it runs EfficientNet-Lite0 and says so.
#   make test       run the whole test suite (installs the Debian packages tests need)
# To have `labels` and `labelsd` on your PATH (the way pipx installs):
#   make install    their own venv in ~/.local/share/labelsd, the commands in ~/.local/bin
#   make uninstall  removes both again, and the shell completion `labels --install-completion`
#                   set up (your library and config stay)
# And for developers:
#   make test-fast  the suite without TensorFlow, PostgreSQL or user namespaces (under 2 min)
#   make lint       ruff over the code, the tests and the benchmarks

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
WATCH   ?= ./inbox
MODEL   ?=
WEIGHTS ?=
DB      ?=
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist; a file's tests stay together, so a
# module's fixtures are built once): the suite is mostly waiting on services and children,
# and on 2 cores two workers take it from about 18 to 11 minutes. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

# The optional parts (`make install EXTRAS=...` and `make run EXTRAS=...`; several: EXTRAS=gpu,postgres):
#   gpu       TensorFlow with CUDA, for an NVIDIA GPU
#   postgres  the PostgreSQL driver (psycopg 3), for a postgresql+psycopg:// database
#   metrics   Prometheus metrics (labelsd --metrics HOST:PORT)
#   litert    the LiteRT runtime; lite  EfficientNet-Lite0's weights: both installed anyway
INSTALL_DIR ?= $(HOME)/.local/share/labelsd
BINDIR      ?= $(HOME)/.local/bin
EXTRAS      ?=

# Every editable install of this layout (two package folders, daemon/ and cli/, so
# setuptools installs an import finder instead of a .pth line) makes setuptools say so in
# a box of asterisks, which pip relays. It is expected here: only that warning is filtered.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip

.PHONY: run test test-fast lint venv test-deps bench clean install uninstall

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing labelsd with its test tools into $(VENV) (a few minutes the first time: TensorFlow is large)"
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# What running needs, no test extras (reinstalled whenever pyproject.toml or EXTRAS change).
comma := ,
RUN_INSTALLED := $(VENV)/.installed-run$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))
$(RUN_INSTALLED): pyproject.toml | $(BIN)/python
	@echo "make run: installing labelsd and what it needs into $(VENV) (a minute or two the first time: TensorFlow is large)"
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	touch $@

run: $(RUN_INSTALLED)
	mkdir -p "$(WATCH)"
	@$(BIN)/python scripts/make_run.py $(if $(DB),--db "$(DB)") $(if $(MODEL),--model "$(MODEL)") \
	  $(if $(WEIGHTS),--weights "$(WEIGHTS)") -- \
	  $(BIN)/labelsd --watch "$(WATCH)" $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(DB),--db "$(DB)")

install:
	@echo "make install: installing labelsd$(if $(EXTRAS), with $(EXTRAS),) into $(INSTALL_DIR)/venv (a minute or two: TensorFlow is large)"
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
	@$(PYTHON) scripts/uninstall_completion.py "$(HOME)"

test-deps:
	bash scripts/install-test-deps.sh

test: venv test-deps
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not tf and not pg and not userns" $(XDIST) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check daemon cli tests bench scripts

bench: venv
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/query.py
	$(BIN)/python bench/web.py --images 100000

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
