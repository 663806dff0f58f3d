# The two commands of the README. Each does all the set-up it needs on a fresh machine: a project
# virtual environment in .venv/ (PYTHON=/path/to/python uses that interpreter instead).
PYTHON ?= .venv/bin/python
DEMO_OUT ?= runs/demo

.PHONY: demo test setup

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PYTHON) -m terwin demo --out $(DEMO_OUT)

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
