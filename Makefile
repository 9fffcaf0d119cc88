# Two commands matter: `make demo` (the main job) and `make test` (the full suite).
# Both bootstrap .venv on first use; `make check` is lint + types (also run by the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ANVIL := tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

.PHONY: demo test check clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# anvil, pinned by tools/package-lock.json; npm blocks its postinstall, which is not needed: the
# binary ships in the platform package.
$(ANVIL): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	test -x $(ANVIL) && touch $(ANVIL)

demo: $(STAMP)
	$(BIN)/monitor demo

# Two workers (2 cores): the multi-process tests run one after another on one of them
# (xdist_group "e2e", tests/e2e/conftest.py), the rest of the suite on the other.
test: $(STAMP) $(ANVIL)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

check: $(STAMP)
	$(BIN)/ruff check monitor tests migrations bench
	$(BIN)/ruff format --check monitor tests migrations bench
	$(BIN)/mypy

# Every benchmark in sequence (bench/README.md); figures in docs/performance.md. They compare
# against Debian's prometheus-blackbox-exporter and wrk, installed here when missing (as root),
# and start a throwaway PostgreSQL like the suite does.
bench: $(STAMP)
	@missing=""; \
	command -v prometheus-blackbox-exporter >/dev/null 2>&1 || missing="$$missing prometheus-blackbox-exporter"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
	fi
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
