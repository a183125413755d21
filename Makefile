# gandiv — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# pytest worker processes (pytest-xdist): one per core; TEST_WORKERS=0 runs the tests in-process
TEST_WORKERS ?= auto
BIN := $(VENV)/bin
STAMP := $(VENV)/.gandiv-installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-all test-reliability lint format bench fidelity clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,sweep]"
	@touch $@

install: $(STAMP) ## create .venv: $(TORCH_SPEC) first (override with TORCH_SPEC=...), then gandiv
	@echo "gandiv installed in $(VENV)"

run: install ## the main job: `gandiv train` with the default config (outputs/DATE/TIME)
	$(BIN)/gandiv train

test: install ## the default test suite (slow tests excluded)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow and not gpu"

test-all: install ## every test, slow ones included (GPU tests skip without CUDA)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-reliability: install ## bad-input catalogue and fault injection (kills, signals, full disk, NaN)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/reliability

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

fidelity: install ## every objective at its defaults on toy problems × 5 seeds: target, ideal, achieved, gap → docs/fidelity-table.md (hours on 2 cores)
	$(BIN)/python benchmarks/fidelity.py --out docs/fidelity-table.md

bench: install ## benchmarks (ratios, see benchmarks/README.md): steps against plain PyTorch; vectorised groups; sweeps; whole runs; ground truth's share; mmd against ns_gan; DCGAN images/s; image eval on the CPU
	$(BIN)/python benchmarks/bench_step.py
	$(BIN)/python benchmarks/bench_gan.py
	$(BIN)/python benchmarks/bench_levers.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_vectorized.py
	$(BIN)/python benchmarks/bench_run.py --eval
	$(BIN)/python benchmarks/bench_truth.py
	$(BIN)/python benchmarks/bench_mmd.py
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_image_eval.py --rounds 2

clean: ## remove the environment and every run output
	rm -rf $(VENV) outputs multirun .pytest_cache .mypy_cache .ruff_cache
