# r2l: R2L (NeRF teacher -> deep residual-MLP neural light field) as a Snakemake pipeline.
# Run everything: snakemake --cores 1 --resources gpu=1   (see README.md)

import os

from r2l.config import validate_config


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate_config(
    config,
    os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"),
    "the config",
)


include: "workflow/rules/common.smk"
include: "workflow/rules/scenes.smk"
include: "workflow/rules/colmap.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/pseudo_data.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
