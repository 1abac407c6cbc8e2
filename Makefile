# One command installs everything and runs something useful:
#   make demo   install, then run the main job on the demo data
#   make test   install, then run the test suite
#   make ui     install, then open the Dagster UI on http://127.0.0.1:3000
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
# CPU wheels by default, so no multi-GB CUDA build is pulled; on a GPU machine use e.g.
#   make install TORCH_VARIANT=cu128
TORCH_VERSION ?= 2.13.0
TORCH_VARIANT ?= cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH_VARIANT)
# postgresql: the server binaries for tests/test_postgres_instance.py (started on loopback by the test;
# the package's own cluster service is not needed).
APT_PACKAGES := ffmpeg sox espeak-ng libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 python3-venv chromium postgresql
PORT ?= 3000
BIN := $(VENV)/bin
export FACETALK_HOME ?= $(CURDIR)/var
export DAGSTER_HOME ?= $(FACETALK_HOME)/dagster_home

.PHONY: install system-deps demo test lint ui bench fitted-head clean

install: system-deps $(VENV)/.installed

# System packages come from apt when they are missing (root on Debian/Ubuntu; else install them yourself).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="yes"; \
	command -v chromium >/dev/null || missing="yes"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="yes"; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || missing="yes"; \
	[ -e /usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libEGL_mesa.so.0 ] || missing="yes"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages: $(APT_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "please install: $(APT_PACKAGES) (or your system's equivalents)" >&2; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11+ or pass PYTHON=..." >&2; exit 1; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from a local CPU wheel when pip's config provides one, else from the PyTorch index.
	$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)+$(TORCH_VARIANT)" 2>/dev/null || \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)+$(TORCH_VARIANT)" --extra-index-url $(TORCH_INDEX)
	# Pin whatever torch is installed, so nothing below can swap it for another build.
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(BIN)/facetalk demo

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ui: install
	@echo "Dagster UI on http://127.0.0.1:$(PORT) (instance: $(DAGSTER_HOME))"
	@$(BIN)/python -c "from pipelines.settings import ensure_dagster_home; ensure_dagster_home()"
	(trap - INT TERM; exec $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT))

bench: install
	for b in loading ingest rematerialize; do $(BIN)/python -m bench.$$b || exit 1; done

# An NPHM-size head fitted to the analytic demo head (~15 min on 2 busy CPU cores), for benchmarks
# and `facetalk animate --head nphm --nphm-checkpoint var/fitted_nphm`.
fitted-head: install
	$(BIN)/python -m bench.fit_nphm_head --out $(FACETALK_HOME)/fitted_nphm

clean:
	rm -rf var
