# dic-connector: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything else (virtualenvs, the FHIR test server, PostgreSQL binaries, Chromium) is installed
# here.

PYTHON ?= python3
VENV ?= .venv
FHIR_VENV ?= .venv-fhir
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
PY := $(VENV)/bin/python
SEKMET_VERSION ?= 0.1.1

.PHONY: all venv fhir-venv checkov-venv postgres chromium test lint typecheck demo bench clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,plots]'
	touch $@

venv: $(VENV)/.installed

# The FHIR test server lives in its own virtualenv so its pins never meet ours.
$(FHIR_VENV)/.installed:
	$(PYTHON) -m venv $(FHIR_VENV)
	$(FHIR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FHIR_VENV)/bin/python -m pip install --quiet 'sekmet-fhir==$(SEKMET_VERSION)'
	touch $@

fhir-venv: $(FHIR_VENV)/.installed

# checkov (tests/helm) pins packaging and others below ours: its own virtualenv too.
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

postgres:
	@bash scripts/ensure-postgres.sh

# Debian's chromium and chromium-driver for the browser test (tests/e2e/test_web.py).
chromium:
	@bash scripts/ensure-chromium.sh

# Two workers (the CI machine's two cores); the end-to-end tests share one of them (see
# tests/conftest.py). `$(PY) -m pytest path` still runs a part in one process.
test: venv fhir-venv checkov-venv postgres chromium
	$(PY) -m pytest -n 2 --dist loadgroup

lint: venv
	$(VENV)/bin/ruff check dic_connector mpc tests benchmarks
	$(VENV)/bin/mypy

demo: venv fhir-venv
	$(PY) -m dic_connector.cli demo

bench: venv
	$(PY) benchmarks/mpc_ops.py --json

clean:
	rm -rf $(VENV) $(FHIR_VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache
