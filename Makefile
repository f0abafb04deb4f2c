# Two commands do all the set-up on a fresh Linux machine with Python 3.11+:
#   make run    build .venv, install r2l, run the whole pipeline on config/config.yaml
#   make test   build .venv, install r2l with test extras, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 1
GPUS ?= 1

.PHONY: run test dryrun lint clean-venv

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(GPUS)

test: $(BIN)/.installed
	@# the viewer's runtime (onnxruntime-web, pinned by its package-lock) from npm, before the tests: no test downloads;
	@# without npm the browser tests say so and skip (on CI they fail)
	-$(BIN)/python -c 'from r2l.report.viewer import ort_runtime; print("onnxruntime-web:", ort_runtime())'
	$(BIN)/python -m pytest -q tests

dryrun: $(BIN)/.installed
	$(BIN)/snakemake -n

lint: $(BIN)/.installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-venv:
	rm -rf $(VENV)
