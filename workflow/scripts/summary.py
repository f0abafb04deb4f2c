"""All scenes' metrics in results/summary.csv and a readable results/summary.md beside R2L's Table 2."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.report.tables import write_summary
from r2l.workflow import stage

with stage(snakemake) as job:
    write_summary(snakemake.input, snakemake.output.csv, snakemake.output.md, paper_scene=snakemake.params.paper_scene)
