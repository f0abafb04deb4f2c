# r2l: R2L (NeRF teacher -> deep residual-MLP neural light field) as a Snakemake pipeline.
# Run everything: snakemake --cores 1 --resources gpu=1   (see README.md)

import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9")

# The Snakefile and workflow/rules/*.smk import only torch-free modules of r2l (r2l.core), from this checkout:
# Snakemake puts the Snakefile's folder first on sys.path. The rule scripts import the r2l package installed in
# their environment: `pip install -e .` here, or, with --sdm conda, workflow/envs/r2l.post-deploy.sh, which
# installs the checkout named by R2L_CHECKOUT (set here, for that script) into each env Snakemake builds.
os.environ.update(R2L_CHECKOUT=workflow.basedir)

from r2l.core.config import run_scenes_line, validate_config
from r2l.core.runlock import claim
from r2l.core.slurmfit import slurm_misfit


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate_config(config, "the config")
print(run_scenes_line(config), file=sys.stderr)
# Before any SLURM job is submitted: each stage's resources fit a node of the partition (r2l.core.slurmfit).
if workflow.is_main_process:
    misfit = slurm_misfit(config, workflow.basedir, sys.argv, os.environ)
    if misfit:
        sys.exit(misfit)
# Not inside a job: take over the locks of a run that was killed (r2l.core.runlock).
if workflow.is_main_process:
    claim_line = claim(Path.cwd())
    if claim_line:
        print(claim_line, file=sys.stderr)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/scenes.smk"
include: "workflow/rules/colmap.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/pseudo_data.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/deploy.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
