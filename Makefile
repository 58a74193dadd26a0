# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, run the demo on the embedded default config
#   make test   - create .venv, install, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench bench-quick clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# The CPU wheel first: an open torch range would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) run.py demo

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
