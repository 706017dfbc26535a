# sweepyard — `make help` lists the targets. Every target installs what it needs (make setup).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PIPELINE ?= sweep
BACKEND ?=
SWEEP_ID ?=
CHAOS ?=
RUNTIME ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sweepyard-installed
PYTEST_ARGS ?=

export PYTHONDONTWRITEBYTECODE := 1


.PHONY: help setup lock test test-slow test-all lint compile check-compiled check validate submit image run schedule status bench bench-quick bench-run ui clean new import rerun

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: PIPELINE=$(PIPELINE) BACKEND=local|argo|kfp SWEEP_ID=... CHAOS=0.3 RUNTIME=image IMAGE=..."

setup: $(STAMP) ## Create .venv and install the locked dependencies (idempotent)

# uv installs the lock in seconds (pinned, bootstrapped into .sweepyard/tools with the system pip);
# INSTALLER=pip is the fallback, and is taken by itself when uv cannot be installed.
INSTALLER ?= uv
UV_VERSION := 0.13.9
TOOLS := .sweepyard/tools
UV := $(TOOLS)/bin/uv
# pip's own find-links folder: where a machine keeps wheels that no index has (here: the CPU torch)
FIND_LINKS := $(shell python3 -m pip config get global.find-links 2>/dev/null)

$(STAMP): requirements.lock pyproject.toml
	@if [ "$(INSTALLER)" = uv ] && { test -x $(UV) || python3 -m pip install -q --target $(TOOLS) "uv==$(UV_VERSION)"; }; then \
	  set -ex; \
	  $(UV) venv -q --seed --allow-existing --python python3 $(VENV); \
	  $(UV) pip install -q --compile-bytecode --python $(PY) $(addprefix --find-links ,$(FIND_LINKS)) -r requirements.lock; \
	  $(UV) pip install -q --python $(PY) --no-deps -e .; \
	else \
	  set -ex; \
	  test -x $(PY) || python3 -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip; \
	  $(PY) -m pip install -q "torch==2.13.0"; \
	  $(PY) -m pip install -q -r requirements.lock; \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e .; \
	fi
	@touch $@

lock: ## Re-resolve pyproject.toml's dependencies into requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "torch==2.13.0" -e ".[dev]"
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

test: setup lint check-compiled ## Lint, check the golden manifests, run the test suite (not the slow one)
	$(PY) -m pytest -m "not slow" --durations=15 $(PYTEST_ARGS)

test-slow: setup ## The long end-to-end suites (CI runs them after `make test`)
	$(PY) -m pytest -m slow --durations=15 $(PYTEST_ARGS)

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check pipelines components tests benchmarks examples
	$(VENV)/bin/ruff format --check pipelines components tests benchmarks examples
	$(VENV)/bin/mypy pipelines components

compile: setup ## Regenerate pipelines/compiled/ (validates first)
	$(PY) -m pipelines compile --all

check-compiled: setup ## Fail when a committed pipeline no longer compiles to its committed golden manifests
	$(PY) -m pipelines check-compiled

check: setup ## A team's CI: compile and validate every pipelines/*.yaml (committed or not), naming each broken one
	$(PY) -m pipelines check

validate: setup ## Validate the compiled manifests (or FILES=...)
	$(PY) -m pipelines validate $(or $(FILES),pipelines/compiled/*.yaml)

submit: setup ## Compile, validate and run PIPELINE (local unless ARGO_SERVER/KFP_HOST or BACKEND is set)
	$(PY) -m pipelines submit --pipeline $(PIPELINE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SWEEP_ID),--sweep-id $(SWEEP_ID)) $(if $(CHAOS),--chaos $(CHAOS)) $(if $(RUNTIME),--runtime $(RUNTIME))

IMAGE_TARGET ?= cpu
IMAGE_TAG ?= localhost/sweepyard:$(IMAGE_TARGET)

image: ## Build the image offline (buildah/podman/docker; base + wheelhouse made here); prints its reference last
	@TARGET=$(IMAGE_TARGET) IMAGE_TAG=$(IMAGE_TAG) containers/build.sh

run: setup ## Run any compiled Workflow locally: make run FILE=path.yaml
	$(PY) -m pipelines run $(FILE)

schedule: setup ## Create the recurring run of PIPELINE (Argo CronWorkflow or KFP recurring run)
	$(PY) -m pipelines schedule --pipeline $(PIPELINE) $(if $(BACKEND),--backend $(BACKEND))

status: setup ## Trial states of the last submission of PIPELINE
	$(PY) -m pipelines status --pipeline $(PIPELINE) $(if $(BACKEND),--backend $(BACKEND))

bench: setup ## Benchmarks at full size: each gates its targets against a baseline run beside it
	@$(MAKE) --no-print-directory bench-run BENCH_ARGS=

bench-quick: setup ## Every benchmarks/bench_*.py at its --quick size (CI; <= 4 minutes), each gating its targets
	@$(MAKE) --no-print-directory bench-run BENCH_ARGS=--quick

BENCHES ?= $(wildcard benchmarks/bench_*.py)
bench-run:
	@failed=""; for b in $(BENCHES); do echo "== $$b $(BENCH_ARGS)"; start=$$(date +%s); \
	PYTHONPATH=$(CURDIR) $(PY) $$b $(BENCH_ARGS) || failed="$$failed $$b"; echo "== $$b: $$(( $$(date +%s) - start )) s"; done; \
	if [ -n "$$failed" ]; then echo "targets missed in:$$failed"; exit 1; fi

new: setup ## Scaffold pipelines/PIPELINE.yaml and trainers/PIPELINE/ (KIND=command for any program)
	$(PY) -m pipelines new $(PIPELINE) $(if $(KIND),--kind $(KIND))

import: setup ## A Katib Experiment as pipelines/<name>.yaml: make import KATIB=experiment.yaml (FORCE=1 replaces)
	@test -n "$(KATIB)" || { echo "usage: make import KATIB=experiment.yaml [FORCE=1]" >&2; exit 2; }
	$(PY) -m pipelines import --katib $(KATIB) $(if $(FORCE),--force)

rerun: setup ## One trial again from its MLflow run: RUN=<run id> (or TRIAL=<id> SWEEP_ID=<sweep>), here or BACKEND=argo|kfp; refuses on drift unless ALLOW_DRIFT=1; FROM_CHECKPOINT=1 continues it
	@test -n "$(RUN)$(TRIAL)" || { echo "usage: make rerun RUN=<mlflow run id> | TRIAL=<trial id> SWEEP_ID=<sweep> [BACKEND=local|argo|kfp] [ALLOW_DRIFT=1] [FROM_CHECKPOINT=1] [PIPELINE=...] [WAIT_TIMEOUT=<s>]" >&2; exit 2; }
	$(PY) -m pipelines rerun $(if $(RUN),--run $(RUN),--trial $(TRIAL) $(if $(SWEEP_ID),--sweep-id $(SWEEP_ID))) $(if $(BACKEND),--backend $(BACKEND)) $(if $(ALLOW_DRIFT),--allow-drift) $(if $(FROM_CHECKPOINT),--from-checkpoint) $(if $(WAIT_TIMEOUT),--wait-timeout $(WAIT_TIMEOUT)) $(if $(filter command line environment,$(origin PIPELINE)),--pipeline $(PIPELINE))

ui: setup ## Serve the local MLflow UI and TensorBoard on loopback
	$(PY) -m pipelines ui --pipeline $(PIPELINE)

clean: ## Remove local run state (.sweepyard/) and caches
	rm -rf .sweepyard .pytest_cache .mypy_cache .ruff_cache
