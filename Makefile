# Fresh machine: `make demo` (set up + offline demo search) and `make test` (set up + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/demo

.PHONY: setup demo test lint clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/emotune demo --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

lint: setup
	$(BIN)/ruff check trainables spaces search tests bench

clean:
	rm -rf $(VENV) runs
