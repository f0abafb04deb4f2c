#!/usr/bin/env bash
# Snakemake runs this once in each env it builds from r2l.yaml (--sdm conda; its post-deploy script interface):
# it installs the r2l package of the checkout whose Snakefile is running (the Snakefile sets R2L_CHECKOUT),
# editable, so every rule script imports that checkout's code. The dependencies come from r2l.yaml.
set -euo pipefail
: "${R2L_CHECKOUT:?is not set: build the env through the Snakefile (snakemake --sdm conda ...)}"
python -m pip install --no-deps --no-build-isolation --editable "$R2L_CHECKOUT"
