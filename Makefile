# Thaw-slump volumetrics: two commands on a fresh machine — `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
SAMPLE  ?= sample
PRODUCTS?= products
SEED    ?= 0
WORKERS ?= 2
PORT    ?= 8501
# the commit the performance goals of the benchmarks are measured against (before the round that set them)
BENCH_BASELINE ?= b5e048f

.PHONY: setup run sample pipeline dashboard test test-fast bench clean

# idempotent: re-installs only when pyproject.toml changed
setup: $(VENV)/.stamp-setup
$(VENV)/.stamp-setup: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

sample: setup
	test -f $(SAMPLE)/sample.json || $(BIN)/rts synth --out $(SAMPLE) --seed $(SEED) --workers $(WORKERS)

pipeline: sample
	$(BIN)/rts run --strips $(SAMPLE)/stac/catalog.json --climate $(SAMPLE)/climate/era5_t2m_monthly.nc \
		--out $(PRODUCTS) --workers $(WORKERS)

# the dashboard with a queue worker beside it (stopped with it) that reprocesses from the sample's strips
dashboard: setup
	$(BIN)/rts dashboard --products $(PRODUCTS) --port $(PORT) --headless \
		$(if $(wildcard $(SAMPLE)/stac/catalog.json),--worker-strips $(SAMPLE)/stac/catalog.json \
		--worker-climate $(SAMPLE)/climate/era5_t2m_monthly.nc)

run: pipeline dashboard

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# the unit tests: no sample region, no whole stage, no browser (tests marked slow are left out)
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md --baseline-ref $(BENCH_BASELINE)

clean:
	rm -rf $(SAMPLE) $(PRODUCTS) bench_work
