# Three commands do everything on a fresh machine: `make demo`, `make test` and `make lab`.
# Each creates .venv and installs what it needs (the stamps make reruns instant).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP    := $(VENV)/.test-installed
WARMUP_STAMP  := $(VENV)/.kernels-warmed-up
COURSE_STAMP  := $(VENV)/.course-installed
KERNEL_SOURCES := $(shell find tinymbv2/kernels/numba -name '*.py')

# The demo recipe (see README): small-input MobileNetV2-0.5 on 5,000 MNIST digits.
DEMO_ARGS ?= --dataset mnist5k --width 0.5 --epochs 14 --batch-size 64 --optimizer sgd \
             --lr 0.2 --weight-decay 5e-4 --schedule onecycle --shift 2 --out runs/demo

DOCS_ENV := NO_MKDOCS_2_WARNING=1   # hides Material's end-of-life banner

.PHONY: demo test lab docs docs-full serve-docs notebooks bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test,docs,deploy,distributed]"
	touch $(RUNTIME_STAMP) $@

$(COURSE_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[course]"
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

# JupyterLab prints the URL to open, with its token. Without a browser, or from another
# machine: make lab JUPYTER_ARGS="--no-browser --ip 0.0.0.0" (as root add --allow-root).
JUPYTER_ARGS ?=
lab: $(COURSE_STAMP)       ## the course's chapters in JupyterLab
	$(PY) -m jupyter lab $(JUPYTER_ARGS) notebooks/

notebooks: $(TEST_STAMP)   ## regenerate notebooks/*.ipynb from notebooks/src/*.py
	$(PY) notebooks/_build.py

# The site shows each chapter's stored full-size run (notebooks/executed/, committed) when
# that ran the chapter's current source. `make docs` runs the other chapters in fast mode
# (into build/notebooks/), and their pages say so at the top. `make docs-full` runs every
# chapter at full size and stores it; `make docs-full CHAPTERS="10 12"` only those.
CHAPTERS ?=
docs: $(TEST_STAMP)        ## build site/; chapters without a current stored run in fast mode
	$(PY) notebooks/_execute.py --fast
	$(DOCS_ENV) $(PY) -m mkdocs build --strict

docs-full: $(TEST_STAMP)   ## store full-size runs of the chapters (tens of minutes), build site/
	$(PY) notebooks/_execute.py --full $(if $(CHAPTERS),$(CHAPTERS),--force)
	$(DOCS_ENV) $(PY) -m mkdocs build --strict

serve-docs: docs
	$(DOCS_ENV) $(PY) -m mkdocs serve

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.train_step

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build site *.egg-info
