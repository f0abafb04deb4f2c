"""results/deploy.csv and deploy.md: every exported student beside its torch original."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.report.exports import write_deploy_summary
from r2l.workflow import stage

with stage(snakemake) as job:
    write_deploy_summary(snakemake.input, snakemake.output.csv, snakemake.output.md)
