# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs (the stamps make reruns instant).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP    := $(VENV)/.test-installed

# The demo recipe (see README): small-input MobileNetV2-0.5 on 5,000 MNIST digits.
DEMO_ARGS ?= --dataset mnist5k --width 0.5 --epochs 8 --batch-size 64 --optimizer sgd \
             --lr 0.2 --weight-decay 5e-4 --schedule onecycle --shift 2 --out runs/demo

.PHONY: demo test docs serve-docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[test]"
	touch $(RUNTIME_STAMP) $@

demo: $(RUNTIME_STAMP)
	$(PY) -m tinymbv2 train $(DEMO_ARGS)

test: $(TEST_STAMP)
	$(PY) -m pytest

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.train_step

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build site *.egg-info
