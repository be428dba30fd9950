# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs (the stamps make reruns instant).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP    := $(VENV)/.test-installed
WARMUP_STAMP  := $(VENV)/.kernels-warmed-up
KERNEL_SOURCES := $(shell find tinymbv2/kernels/numba -name '*.py')

# The demo recipe (see README): small-input MobileNetV2-0.5 on 5,000 MNIST digits.
DEMO_ARGS ?= --dataset mnist5k --width 0.5 --epochs 14 --batch-size 64 --optimizer sgd \
             --lr 0.2 --weight-decay 5e-4 --schedule onecycle --shift 2 --out runs/demo

DOCS_ENV := NO_MKDOCS_2_WARNING=1   # hides Material's end-of-life banner

.PHONY: demo test docs docs-full serve-docs notebooks bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test,docs]"
	touch $(RUNTIME_STAMP) $@

# Numba compiles the kernels on first use, about a minute; `tinymbv2 warmup` does it here,
# once (again after a kernel changes), so that the demo's first epoch does not start with it.
$(WARMUP_STAMP): $(RUNTIME_STAMP) $(KERNEL_SOURCES)
	$(PY) -m tinymbv2 warmup
	touch $@

demo: $(WARMUP_STAMP)
	$(PY) -m tinymbv2 train $(DEMO_ARGS)

test: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

notebooks: $(TEST_STAMP)   ## regenerate notebooks/*.ipynb from notebooks/src/*.py
	$(PY) notebooks/_build.py

docs: $(TEST_STAMP)        ## run changed chapters in fast mode, then build site/
	$(PY) notebooks/_execute.py --fast
	$(DOCS_ENV) $(PY) -m mkdocs build --strict

docs-full: $(TEST_STAMP)   ## full-size chapter runs for publishing (tens of minutes)
	$(PY) notebooks/_execute.py --force
	$(DOCS_ENV) $(PY) -m mkdocs build --strict

serve-docs: docs
	$(DOCS_ENV) $(PY) -m mkdocs serve

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.train_step

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build site *.egg-info
