"""All scenes' metrics in results/summary.csv and a readable results/summary.md beside R2L's Table 2."""

from r2l.tables import write_summary
from r2l.workflow import stage

with stage(snakemake) as job:
    write_summary(snakemake.input, snakemake.output.csv, snakemake.output.md, paper_scene=snakemake.params.paper_scene)
