"""Ground truth | teacher | student | finetuned (| those of student.compare's families) | error map, for one test
view of the scene."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.models.load import describe_model
from r2l.report.figures import scene_comparison_figure
from r2l.workflow import stage

with stage(snakemake) as job:
    families = {m: describe_model(snakemake.input[f"{m}_model"])["family"] for m in ("student", "finetuned")}
    extras = [describe_model(path)["family"] for path in snakemake.input.compared]
    scene_comparison_figure(job.scene(), snakemake.input.renders, snakemake.output[0],
                            view=job.section("evaluate")["figure_view"], families=families, extras=extras)
