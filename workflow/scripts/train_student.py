"""Distil the teacher's pseudo views into the R2L student; validation PSNR on the real val views."""

import _checkout  # noqa: F401  (r2l from this checkout; first)
from pathlib import Path

from r2l.stages.student import distill_config_from_dict, train_student
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = distill_config_from_dict(job.section("student"))
    resume_dir = job.resume_dir(("student",), [snakemake.input.pseudo])
    train_student([Path(snakemake.input.pseudo).parent], cfg, snakemake.output.model, resume_dir,
                  val_store=Path(snakemake.input.val).parent, history_path=snakemake.output.history)
