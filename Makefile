# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := bus databus producers schemas sinks stream_processors
# Tests and benches are type-checked too: the strict [tool.mypy] flags, except that test
# functions and fixtures need not annotate every argument. The product packages they import
# are read, not reported (the first mypy run reports them); a cache of its own stops the two
# runs' different flags from invalidating each other's cache.
# The suite's tests mostly wait on the servers and processes they start (pytest uses
# about a third of two cores in one process), so two pytest-xdist workers halve its time.
# --dist loadfile: a test file's tests share its module fixtures (a bus of its own),
# so a file runs on one worker. `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2
MYPY_TESTS := --allow-untyped-defs --allow-incomplete-defs --follow-imports=silent \
	--cache-dir=.mypy_cache/tests tests bench

.PHONY: install run test test-rules test-slow test-all lint bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run the whole bus on embedded servers with the dossier simulator; Ctrl-C stops it
run: $(STAMP)
	$(BIN)/databus up

## lint + types + the test suite (unit + integration on embedded servers), without slow tests
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mypy $(MYPY_TESTS)
	@# Byte-compile the project once: the tests start many `databus` processes, and
	@# where PYTHONDONTWRITEBYTECODE is set each would compile every module again.
	$(BIN)/python -m compileall -q $(PACKAGES) > /dev/null
	@$(MAKE) --no-print-directory test-rules
	@# --durations: the slowest tests in every run's log, to keep the suite under budget
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" --durations=20 tests

## promtool check + unit tests of the alert rules (deploy/prometheus/tests); skipped,
## saying so, where promtool is not installed (Debian: apt-get install prometheus)
test-rules:
	@if command -v promtool > /dev/null 2>&1; then \
		promtool check rules deploy/prometheus/rules/*.yml && \
		promtool test rules deploy/prometheus/tests/*.test.yml; \
	else \
		echo "SKIPPED: promtool is not on PATH, so the Prometheus rule tests (deploy/prometheus/tests) did not run; install it: apt-get install prometheus"; \
	fi

## slow fault-injection and soak tests
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow tests || test $$? -eq 5  # 5: none selected yet

test-all: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/mypy $(MYPY_TESTS)

## every throughput benchmark with its same-run baseline, JSON in bench/results/
## (figures in docs/benchmarks.md); `make bench BENCH_ARGS=--quick` for small sizes
BENCHES ?= codec standardize sink_redis sink_sql publisher end_to_end processor broker_storage
bench: $(STAMP)
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py $(BENCH_ARGS) || exit 1; done

## the chaos suite: every fault scenario, its table, JSON in bench/results/chaos-*.json
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
