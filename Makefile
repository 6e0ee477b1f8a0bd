# The tasks a contributor runs; .ci/run calls the same targets. `make help` lists them.
PYTHON ?= python
# A second supported Python, tested by `make test-py313` and CI in a virtualenv of its own.
PYTHON313 ?= python3.13
VENV313 ?= .venv-3.13
FAST = -m "not e2e and not system"
# Hypothesis: the fast lane caps property tests' examples; every other target runs them all.
FULL = HYPOTHESIS_PROFILE=full

.PHONY: help install lint types test-fast test test-py313 golden dashboards mixin lock bench bench-incremental bench-store bench-domains bench-account bench-ab ci

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

install:  ## install the package and the test extras, editable
	$(PYTHON) -m pip install -q -e '.[test]'

lint:  ## ruff: lint and formatting
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

types:  ## mypy strict over the package, the scripts, the tests and the benchmarks
	$(PYTHON) -m mypy exporter dashboards deploy/kubernetes/generate_prometheusrule.py mixin/render.py tests benchmarks

test-fast:  ## the fast lane: no process, no Prometheus (seconds)
	$(PYTHON) -m pytest $(FAST)

test:  ## every test (the Prometheus tests need Debian's prometheus package)
	$(FULL) $(PYTHON) -m pytest

test-py313:  ## every test on Python 3.13, in $(VENV313)
	$(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install -q -e '.[test]'
	$(FULL) $(VENV313)/bin/python -m pytest

golden:  ## rewrite tests/fixtures/golden.prom after an intended change of the exposition
	UPDATE_GOLDEN=1 $(PYTHON) -m pytest tests/publish/test_golden.py

dashboards:  ## regenerate the dashboard JSON from dashboards/generate.py (limits: mixin/config.libsonnet)
	$(PYTHON) dashboards/generate.py

mixin:  ## render mixin/ into prometheus/rules.yml and the PrometheusRule; run the rules' unit tests
	$(PYTHON) mixin/render.py
	$(PYTHON) deploy/kubernetes/generate_prometheusrule.py
	promtool test rules prometheus/rules_test.yml

# pip-tools runs from a virtualenv of its own: it is needed here only, not by the tests.
LOCK_VENV ?= $(or $(TMPDIR),/tmp)/ucdn-prefetch-exporter-lock
# It keeps the pins that still fit pyproject.toml; `make lock LOCK_FLAGS=--upgrade` moves them.
lock:  ## regenerate requirements.lock: the runtime dependencies, pinned with hashes (Dockerfile)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet $(LOCK_FLAGS) \
		--generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

bench:  ## the performance benchmark (about a minute)
	$(PYTHON) benchmarks/bench_scrape.py

bench-incremental:  ## incremental collection against the exporter's targets (under a minute)
	$(PYTHON) benchmarks/bench_incremental.py

bench-store:  ## memory while a gateway adds 25,000 finished tasks a collection (a few minutes)
	$(PYTHON) benchmarks/bench_store_bound.py

bench-domains:  ## a steady scrape's CPU with 90,000 hosts against one host (a few minutes)
	$(PYTHON) benchmarks/bench_domains.py

bench-account:  ## 2,000 targets behind a rate-limited gateway, background collection (10 minutes)
	$(PYTHON) benchmarks/bench_account.py

BASE ?= HEAD
bench-ab:  ## a steady scrape of revision BASE against this tree, in turns (a few minutes)
	$(PYTHON) benchmarks/ab_steady.py $(BASE)

ci: lint types test test-py313  ## what .ci/run runs after installing
