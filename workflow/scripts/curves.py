"""The training curves of one scene (teacher, student, finetuned, and those of student.compare's families) from
their history.csv files."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.models.load import describe_model
from r2l.report.curves import curves_figure
from r2l.workflow import stage

with stage(snakemake) as job:
    histories = {name: path for name, path in snakemake.input.items() if not name.endswith("_model")}
    families = {m: describe_model(snakemake.input[f"{m}_model"])["family"] for m in ("student", "finetuned")}
    curves_figure(histories, snakemake.output[0], title=job.scene_name, families=families)
