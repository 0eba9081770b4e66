# Two commands for a new user: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/data/dagster_home
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: setup demo sync test ui bench advance clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Full sync on the embedded demo company (SAP B1 and Ometria emulators over local HTTP), in its
## own Dagster instance and warehouse under data/demo/, so it never collides with `make ui`.
demo: $(STAMP)
	$(BIN)/sap-ometria demo

## Full sync against the systems the environment names (a real Service Layer and Ometria account).
sync: $(STAMP)
	$(BIN)/sap-ometria sync

## Advance the demo company's clock: new and edited records for an incremental sync.
advance: $(STAMP)
	$(BIN)/sap-ometria advance

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

## Dagster UI (webserver + daemon, so schedules and sensors tick) on $(HOST):$(PORT).
ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster-daemon run -w workspace.yaml & DAEMON=$$!; \
	trap "kill $$DAEMON" EXIT; \
	$(BIN)/dagster-webserver -w workspace.yaml -h $(HOST) -p $(PORT)

## Benchmarks at demo scale x1, x10, x100 (BENCH_SCALES=1,10 to choose) -> benchmarks/results.md.
## Long (x100: about an hour with the push); not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.tenants --results benchmarks/results.md

clean-demo:
	rm -rf data/demo
