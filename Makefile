.PHONY: setup demo test lint servers-start servers-stop clean
VENV ?= .venv
PY := $(VENV)/bin/python

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	bash scripts/lint_imports.sh
	OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	bash scripts/lint_imports.sh

servers-start:
	bash scripts/servers.sh start

servers-stop:
	bash scripts/servers.sh stop

clean:
	rm -rf $(VENV) .servers
