# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml Makefile | sha1sum | cut -c1-12)
EVENTS ?= 100000

.PHONY: setup demo test lint validate dev broker produce bench lock clean

# Bytecode is compiled at install (as pip does by default; uv needs --compile-bytecode):
# shells here run Python with PYTHONDONTWRITEBYTECODE=1, so without it every process
# (the code server, each run worker, each dbt build) compiles ~2,000 modules from source,
# 2-3 s of CPU each. The project's own package is recompiled on every target (0.1 s);
# an edited module is compiled from source until then.
setup: $(STAMP)
	$(BIN)/python -m compileall -q school_equity

$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@
	$(MAKE) dbt-parse

.PHONY: dbt-parse
dbt-parse:
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir . --target local

## The main job, headless, on the embedded defaults (local broker, local lake, DuckDB)
demo: setup
	$(BIN)/school-equity demo --events $(EVENTS)

## The test suite (what CI runs)
test: setup lint validate
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check school_equity assets_tests bench

validate: setup
	$(BIN)/dagster definitions validate -m school_equity.definitions

## `dagster dev` with the local broker and producer beside it (see README)
dev: setup
	$(BIN)/school-equity dev

broker: setup
	$(BIN)/school-equity broker start

bench: setup
	$(BIN)/python -m bench.run

lock:
	$(BIN)/uv pip compile requirements.in -o requirements.lock --python-version 3.11

clean:
	rm -rf .school_equity dbt_project/target
