# Every target that needs the virtualenv or buf depends on the stamps below,
# so `make run` and `make test` work as the first command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PROTODEPS := build/protodeps/google/api/annotations.proto
PROTO_BUNDLE ?= build/proto-bundle

.PHONY: setup generate lint test run demo bench clean proto-bundle

setup: $(VENV_STAMP) $(NODE_STAMP) $(PROTODEPS)

# buf.yaml's second module: google/api from the installed package (buf lint needs it).
$(PROTODEPS): $(VENV_STAMP)
	$(PY) scripts/generate.py --deps

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

generate: setup
	$(PY) scripts/generate.py

# proto/ and google/api/{annotations,http}.proto in one folder, for clients in any language.
proto-bundle: $(VENV_STAMP)
	$(PY) scripts/generate.py --bundle $(PROTO_BUNDLE)

lint: setup
	$(VENV)/bin/ruff check agentconf service gateway tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/generate.py --check
	$(BUF) lint
	$(BUF) format --diff --exit-code

# The suite in TEST_WORKERS processes (pytest-xdist), one test file at a time each, so
# a module's stack of service and gateway starts once. The end-to-end tests mostly wait
# on their subprocesses: more workers than cores pay. Files go out in collection order
# (tests/e2e early), not largest-count first, which left the long e2e files for the end.
# The suite starts some 150 Python processes: they reuse compiled bytecode even where
# PYTHONDONTWRITEBYTECODE is set. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4
test: $(VENV_STAMP)
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

run: $(VENV_STAMP)
	$(PY) scripts/run.py

demo: $(VENV_STAMP)
	$(PY) scripts/run.py --demo

# The shared-queue figures need PostgreSQL (the same variable as the tests): on by default here.
bench: $(VENV_STAMP)
	AGENT_TEST_POSTGRES_URL=$${AGENT_TEST_POSTGRES_URL-postgresql://postgres@127.0.0.1:5432/test} $(PY) scripts/bench.py

clean:
	rm -rf $(VENV) node_modules build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
