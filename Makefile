# The two commands of the README. Each does all the set-up it needs on a fresh machine.
PYTHON ?= python3
DEMO_OUT ?= runs/demo

.PHONY: demo test setup

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m terwin demo --out $(DEMO_OUT)

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
