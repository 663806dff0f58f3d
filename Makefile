# The two commands of the README. Each does all the set-up it needs on a fresh machine: a project
# virtual environment in .venv/ (PYTHON=/path/to/python uses that interpreter instead).
PYTHON ?= .venv/bin/python
DEMO_OUT ?= runs/demo

.PHONY: demo test setup

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PYTHON) -m terwin demo --out $(DEMO_OUT)

# the suite on every core (pytest-xdist; a worker takes over the queue of a busy one);
# PYTEST_WORKERS=0 runs it in this process alone
PYTEST_WORKERS ?= auto

test: setup
	$(PYTHON) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
