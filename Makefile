# crm-bulk: `make run` starts the embedded stack; `make test` installs, starts the test services, runs every test.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SOURCES := pyproject.toml Cargo.toml $(shell find rust -name '*.rs' 2>/dev/null)

.PHONY: install run test lint chart-lint bench services-start services-stop clean

$(STAMP): $(SOURCES)
	@command -v cargo >/dev/null || { echo "make: a Rust toolchain (cargo) is required: https://rustup.rs" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/crm-bulk up

# Services are stopped whatever the outcome; pytest's "no tests collected" (exit 5) counts as a failure.
test: install
	scripts/browser_tools.sh install
	@scripts/services.sh start; \
	CI=$${CI:-} $(VENV)/bin/pytest tests; rc=$$?; \
	scripts/services.sh stop; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: install chart-lint
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m mypy.stubtest crm_bulk._core
	cargo clippy --all-targets -- -D warnings
	cargo test

# The Helm chart, offline: helm lint, manifests against the Kubernetes and CRD schemas, checkov (tools built
# or installed once into .tools/ by scripts/helm_tools.sh; Go is needed the first time, for helm).
chart-lint:
	scripts/helm_tools.sh lint

# The throughput suite on an isolated stack of its own (its own PostgreSQL, API, workers and scheduler; results
# and chart in bench-results/), then the pytest-benchmark micro benchmarks. Options through BENCH_ARGS, e.g.
# BENCH_ARGS="--quick --sweep"; `--deployment kafka` needs the broker: scripts/services.sh start kafka.
BENCH_ARGS ?=
bench: install
	@mkdir -p bench-results
	$(VENV)/bin/crm-bulk bench --out bench-results/bench.json $(BENCH_ARGS)
	$(VENV)/bin/pytest benchmarks --benchmark-only

services-start:
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

clean:
	scripts/services.sh stop || true
	rm -rf $(VENV) target .services
