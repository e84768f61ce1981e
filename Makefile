# Two commands for a fresh machine: `make demo` and `make test` (README). Both install into .venv first.
# CPU machines pin the CPU torch wheel through constraints/cpu.txt; on a CUDA machine run
# `make install CONSTRAINTS=` so pip takes the CUDA build that matches the pyproject range.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "== creating $(VENV) and installing (CPU torch pinned by $(CONSTRAINTS))"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, monai, SimpleITK, itk, nibabel, mlflow, ignite; print('installed: torch', torch.__version__, '| monai', monai.__version__)"
	touch $(STAMP)

demo: install
	$(PY) -m pipeline demo --out $(DEMO_DIR)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/network_levels.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
