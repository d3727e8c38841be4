# Two entry points (see README): `make demo` and `make test`. Both install first, into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: an unpinned torch pulls several GB of CUDA wheels. constraints.txt pins the rest.
INSTALL := $(BIN)/pip install -q -c constraints.txt

$(BIN)/fedrec: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(INSTALL) torch==2.13.0
	$(INSTALL) -e '.[test]'
	touch $@

install: $(BIN)/fedrec

demo: install
	$(BIN)/fedrec simulate --out runs/demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers (pytest-xdist), a test file on one

.PHONY: install demo test
