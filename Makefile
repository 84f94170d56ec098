# Two everyday commands:
#   make run   - set up a virtualenv and start the server in development mode on port 3001
#   make test  - set up everything the tests need and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
MIN_VENV ?= .venv-min
# The unit tests' own tools (latest versions): the minimums checked are the server's dependencies.
MIN_TEST_TOOLS = pytest pytest-asyncio pytest-timeout hypothesis

.PHONY: run test test-min setup lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fast]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed tests/js/node_modules/.installed

run: $(VENV)/.installed
	NODE_ENV=$${NODE_ENV:-development} $(PY) -m spacesync

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The unit tests on the lowest versions pyproject.toml allows, installed exactly (a fresh
# virtualenv each time). The shared conftest is skipped: it loads the integration harness,
# which needs a newer aiohttp than the server does; the unit tests use none of it.
test-min:
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	echo '*' > $(MIN_VENV)/.gitignore
	$(PYTHON) ci/min_requirements.py -o $(MIN_VENV)/min-pins.txt
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/min-pins.txt -e '.[fast]' $(MIN_TEST_TOOLS)
	$(MIN_VENV)/bin/python -m pip check
	$(MIN_VENV)/bin/python -m pytest -q --noconftest tests/unit
	$(MIN_VENV)/bin/python -m pytest -q --confcutdir=tests/protocol tests/protocol

bench: $(VENV)/.installed
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MIN_VENV) tests/js/node_modules .pytest_cache
