# Two commands for a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo_output

.PHONY: install demo test lint docs bench clean

install: $(STAMP)

# torch is pinned and installed first: on these machines 2.13.0 is a local CPU wheel,
# while an unpinned torch would pull gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,ray,mlflow,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fraudseq.demo --out $(DEMO_DIR)

# Two pytest workers with one torch thread each: two workers at two threads each would
# oversubscribe a 2-core machine and run many times slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2

# The headline result: the default model on the Fraud Detection Handbook's four prequential
# folds (needs ../shared/data/handbook_transactions.csv.gz); writes
# benchmarks/results/handbook_protocol.json and prints the README's table from it.
.PHONY: bench-handbook
bench-handbook: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/handbook_protocol.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or reference fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(DEMO_DIR) site
