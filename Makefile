# Quick start: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Transparent huge pages for XLA's large CPU buffers (glibc 2.35+; ignored elsewhere): docs/design.md.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pihc.cli demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/constraint_scaling.py --small

clean:
	rm -rf $(VENV) runs .pytest_cache
