"""Distil the teacher's pseudo views into the R2L student; validation PSNR on the real val views.

With ``resources.student.gpus`` above 1 the training runs in that many processes (r2l.stages.distributed).
"""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.stages.distributed import run_training
from r2l.stages.student import distill_config_from_dict
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = distill_config_from_dict(job.section("student"))
    resume_dir = job.resume_dir(("student",), [snakemake.input.pseudo])
    args = dict(store_dirs=[Path(snakemake.input.pseudo).parent], cfg=cfg, out_path=snakemake.output.model,
                resume_dir=resume_dir, val_store=Path(snakemake.input.val).parent,
                history_path=snakemake.output.history)
    run_training("train_student", args, snakemake.resources.gpu, resume_dir, snakemake.log[0],
                 job.config["resources"]["student"]["gpus"])
