# Two commands for a fresh machine: `make demo` and `make test` (README). Both install into .venv first.
# constraints/cpu.txt pins torch==2.13.0. On the development machine pip finds that version as a CPU wheel in a
# local wheel folder; on an ordinary machine PyPI's torch 2.13.0 for Linux is the multi-GB CUDA build, so there
# take the CPU wheel from PyTorch's own index first:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# On a CUDA machine run `make install CONSTRAINTS=` so pip takes the CUDA build that matches the pyproject range.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
TORCH_INDEX ?=
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: install demo lint test test-fast bench mlflow mutants clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "== creating $(VENV) and installing (CPU torch pinned by $(CONSTRAINTS))"
	@# tcmalloc: the `python -m pipeline` commands preload it (about 2x faster on CPU, see pipeline/fastpath.py)
	@if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 /lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1) || \
	    echo "note: could not install libtcmalloc-minimal4; the commands run with glibc malloc (slower)"; \
	  else echo "note: install libtcmalloc-minimal4 (apt) for about 2x faster CPU training and inference"; fi; \
	fi
	@# dicom3tools: dciodvfy validates the DICOM SEG outputs in the tests (they skip, saying so, without it)
	@if ! command -v dciodvfy >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dicom3tools >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dicom3tools >/dev/null 2>&1) || \
	  echo "note: could not install dicom3tools; the DICOM SEG validation test will skip"; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(if $(TORCH_INDEX),$(PIP) install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX))
	@# the onnx extra too: the tests export and segment ONNX models (the constraints keep the CPU torch pin)
	$(PIP) install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev,onnx]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, monai, SimpleITK, itk, nibabel, mlflow, ignite, onnxruntime, onnxscript; print('installed: torch', torch.__version__, '| monai', monai.__version__, '| onnxruntime', onnxruntime.__version__)"
	touch $(STAMP)

demo: install
	$(PY) -m pipeline demo --out $(DEMO_DIR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pipeline sync-configs unetpp_mri_segmentation --check
	$(PY) -m pipeline sync-configs unetpp_ct_segmentation --check

# Two pytest workers (whole files each, so module fixtures are built once), each with one compute thread: torch
# then never oversubscribes the cores, and one worker's imports, subprocess start-ups and I/O overlap with the
# other's compute. On the 2-core machine: 13:45 against 20:41 serial (two threads per process), same tests.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --durations=25
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: lint
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: lint
	$(TEST_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

MLFLOW_DIR ?= mlflow_store
MLFLOW_PORT ?= 5000
# A light tracking server on 127.0.0.1 (SQLite store, local artifact root): one worker and no GenAI job runners
# (2 processes, about 0.5 GB, against 15 and 3.0 GB by default; docs/mlflow.md). Then, in another shell:
#   MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) make demo   (or any `monai.bundle run ... --tracking`)
# and open http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning (Model training mode).
mlflow: install
	mkdir -p $(MLFLOW_DIR)/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--workers 1 --backend-store-uri sqlite:///$(abspath $(MLFLOW_DIR))/mlflow.db \
		--artifacts-destination $(abspath $(MLFLOW_DIR))/artifacts

# Serve a registered model over HTTP (POST /invocations, docs/mlflow.md). The venv's bin goes first on PATH:
# `mlflow models serve --env-manager local` execs `uvicorn` from PATH. MODEL is any MLflow model URI; a
# models:/ URI is looked up at MLFLOW_TRACKING_URI (default: the `make mlflow` server).
MODEL ?= models:/unetpp_mri_segmentation@best
PORT ?= 5001
MLFLOW_TRACKING_URI ?= http://127.0.0.1:$(MLFLOW_PORT)
.PHONY: serve
serve: install
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI=$(MLFLOW_TRACKING_URI) \
		$(VENV)/bin/mlflow models serve -m $(MODEL) --env-manager local --host 127.0.0.1 --port $(PORT) --workers 1

# Mutation testing of the core modules, outside CI (docs/testing.md). mutmut copies the project to mutants/,
# changes one operator, constant or call at a time and runs the tests that cover it; the modules and tests are
# [tool.mutmut] in pyproject.toml. All 2,520 mutants take hours on 2 cores (the batch job's tests segment real
# volumes); MUTANTS narrows a run, e.g. make mutants MUTANTS='pipeline.training.guard*'. Survivors:
# .venv/bin/mutmut results, then .venv/bin/mutmut show <name>.
MUTANTS ?=
mutants: install
	$(PIP) install --quiet 'mutmut>=3.8,<4' 2>&1 | grep -v "^WARNING: Location" || true
	rm -rf mutants .mutants-fixtures
	$(TEST_ENV) PIPELINE_TEST_FIXTURE_CACHE=$(CURDIR)/.mutants-fixtures $(VENV)/bin/mutmut run $(MUTANTS) > /dev/null || true
	$(PY) scripts/mutation_scores.py mutants

bench: install
	$(PY) benchmarks/network_levels.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
