# cvops: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Compile and keep bytecode: imports of torch/ray/prefect/GX are 2x slower without it. `install`
# compiles the environment once (~1 CPU-minute; later syncs skip what is compiled), so every
# command reads bytecode even where PYTHONDONTWRITEBYTECODE is set (`cvops history`: 7.7 -> 3.9 CPU-s).
unexport PYTHONDONTWRITEBYTECODE
# No network at run time: every tool's telemetry off (also set in components/__init__.py).
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := False
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0
export UV_PYTHON_DOWNLOADS := never

# uv from PATH, else bootstrapped into the user's Python from the package registry.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install:  ## install the locked environment into .venv (bootstraps uv if missing)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==0.13.8"
	$(UV) sync --frozen --compile-bytecode

demo: install  ## run the whole pipeline on the built-in data (embedded MLflow, Prefect, Ray, DVC)
	$(RUN) cvops run

test: install  ## run the test suite (real MLflow, Prefect, DVC and Ray, on tiny data)
	$(RUN) pytest

test-slow: install  ## full-quality runs (minutes each)
	$(RUN) pytest -m slow

bench: install  ## CPU benchmarks; results are written to benchmarks/
	$(RUN) pytest -m bench -s || [ $$? -eq 5 ]  # 5: no benchmark test collected
	$(RUN) python benchmarks/ray_train.py
	$(RUN) python benchmarks/bench_noop_repro.py

lint: install  ## ruff
	$(RUN) ruff check components flows tests

clean:  ## remove pipeline outputs and local stores (keeps .venv)
	rm -rf data/*/ models/ reports/ mlruns.db mlartifacts/ ray_results/ .cvops/

.PHONY: help install demo test test-slow bench lint clean
