# bifusion: `make demo` runs the whole pipeline on synthetic scenes; `make test` runs the tests.
# Both install what they need (idempotently) into .venv via `make setup`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/demo
DEMO_SCENES ?= 128

export DEMO_DATA DEMO_SCENES

.PHONY: setup demo test bench ablation clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests

# the performance suite P1-P8 (~15 min on 2 cores): a Rich table and bench/results.json
bench: setup
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

# 3D-only vs BiFusion variants, 3 seeds each, on synthetic scenes (~45 min on 2 cores):
# outputs/ablation/ablation.json and ablation.png
ablation: setup
	$(BIN)/python bench/ablation.py $(ABLATION_ARGS)

clean-demo:
	rm -rf $(DEMO_DATA) outputs/demo

.PHONY: cuda-wheel gpu-check

# MinkowskiEngine built for CUDA on a machine without a GPU (nvcc from the registry, into its own
# venv), then compared with the CPU build and the test suite run on CPU tensors against it. A one-time
# check, not part of `make test`: ~45 min on 2 cores the first time (docs/GPU.md).
cuda-wheel:
	@bash scripts/cuda_wheel.sh

# On a machine with an NVIDIA GPU: the CUDA path and bench P1/P3/P6 in one table (docs/GPU.md).
gpu-check:
	@bash scripts/gpu_check.sh
