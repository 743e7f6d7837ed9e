# make demo   the main job on an embedded default (set-up included)
# make test   lint + the CPU test suite (set-up included)
# make fuzz   the hostile-input suite with many more generated examples (minutes)
# make setup  idempotent: creates .venv with pinned versions
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.setup-done
DEMO_OUT ?= out/demo

.PHONY: setup demo test fuzz lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION) already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install "torch==$(TORCH_VERSION)"; \
	else \
		echo "no CUDA device: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(PIP) install "torch==$(TORCH_VERSION)+cpu" || \
		$(PIP) install "torch==$(TORCH_VERSION)+cpu" --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PIP) install -r requirements.txt -r requirements-dev.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(PY) examples/demo.py --output $(DEMO_OUT)

lint: setup
	$(VENV)/bin/ruff check megatron_dscoder tools tests benchmarks examples
	$(VENV)/bin/ruff format --check megatron_dscoder tools tests benchmarks examples
	$(VENV)/bin/lint-imports
	@scripts=$$(ls examples/*.sh examples/*.sbatch benchmarks/*.sh 2>/dev/null); if [ -n "$$scripts" ]; then \
		for s in $$scripts; do bash -n "$$s"; done; $(VENV)/bin/shellcheck -x $$scripts; fi
	@if [ -f Dockerfile ]; then $(VENV)/bin/hadolint Dockerfile; fi

test: setup lint
	$(PY) -m pytest -q --durations=12 tests

fuzz: setup
	DSCODER_FUZZ_PROFILE=fuzz $(PY) -m pytest -q tests/test_hostile_cli.py tests/test_hostile_records.py \
		tests/data/test_manifest.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
