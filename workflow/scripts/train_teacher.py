"""Train the teacher (NeRF or grid) of one scene; resumes from resources/resume/{scene}/teacher."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.models.teacher import teacher_config_from_dict
from r2l.stages.teacher import train_teacher
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = teacher_config_from_dict(job.section("teacher"))
    train_teacher(job.scene(), cfg, snakemake.output.model, job.resume_dir(("teacher",)),
                  history_path=snakemake.output.history)
