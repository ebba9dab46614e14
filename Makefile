# Two commands for a newcomer: `make demo` starts everything, `make test` runs every test.
# Both bootstrap what they need on a machine with only Python >= 3.11 and make: uv (into a private
# virtualenv if it is not on PATH), then the locked dependencies from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: demo test lint format bootstrap up down status clean bench-quick

bootstrap: .venv/.synced

.tools/bin/uv:
	@echo "uv not found: installing uv $(UV_VERSION) into .tools/"
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	@touch $@

demo: bootstrap
	$(UV) run --frozen oms demo

# The suite runs on two xdist workers (a file stays on one worker, so module fixtures are shared; each worker
# has its own embedded Postgres and ClickHouse). The tests that start the whole stack (marker `slow`: two starts
# of `make demo`, mostly waiting on the simulated world, and `oms up/status/down`) run beside it, one after the
# other; their report is printed at the end and either lane failing fails the target.
test: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	@mkdir -p test-artifacts
	@$(UV) run --frozen pytest -m slow -p no:cacheprovider > test-artifacts/slow.log 2>&1 & slow=$$!; \
	$(UV) run --frozen pytest -m "not slow" -n 2 --dist loadfile; rest=$$?; \
	wait $$slow; slow_rc=$$?; \
	echo "---- slow tests (test-artifacts/slow.log) ----"; cat test-artifacts/slow.log; \
	if [ $$rest -ne 0 ] || [ $$slow_rc -ne 0 ]; then exit 1; fi

lint: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: bootstrap
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

up: bootstrap
	$(UV) run --frozen oms up

down: bootstrap
	$(UV) run --frozen oms down

status: bootstrap
	$(UV) run --frozen oms status

bench-quick: bootstrap
	for b in bench/*.py; do $(UV) run --frozen python $$b --quick || exit 1; done

clean:
	rm -rf .oms dbt/target dbt/logs .pytest_cache .ruff_cache test-artifacts
