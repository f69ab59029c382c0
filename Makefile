# Two commands matter: `make test` and `make demo`. Both create .venv on first use and
# reuse it afterwards (re-installing only when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgesdk-installed

.PHONY: test test-all demo bench venv clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip check
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/edgesdk demo

bench: $(STAMP)
	$(PY) benchmarks/runtime_overhead.py

clean:
	rm -rf edgesdk-out .pytest_cache
