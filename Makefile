# Set-up and everyday commands. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nfy-installed
# pytest-xdist workers; 2 matches the 2-core machines the suite is sized for
WORKERS ?= 2

.PHONY: install test test-slow demo bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the rest of the stack resolves against this exact build
	$(PY) -m pip install -q torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -n $(WORKERS) -m slow

demo: $(STAMP)
	$(PY) -m experiments.demo

bench: $(STAMP)
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) data/demo outputs lightning_logs .pytest_cache
