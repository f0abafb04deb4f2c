"""Finetune the distilled student on the real training views; keep the checkpoint best on validation.

With ``resources.finetune.gpus`` above 1 the finetuning runs in that many processes (r2l.stages.distributed).
"""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.stages.distributed import run_training
from r2l.stages.student import distill_config_from_dict, finetune_config
from r2l.workflow import stage

with stage(snakemake) as job:
    ft = job.section("finetune")
    cfg = finetune_config(distill_config_from_dict(job.section("student")), ft)
    resume_dir = job.resume_dir(("student", "finetune"), [snakemake.input.student, snakemake.input.real])
    args = dict(student_ckpt=Path(snakemake.input.student), real_store=Path(snakemake.input.real).parent,
                val_store=Path(snakemake.input.val).parent, cfg=cfg, steps=ft["steps"],
                out_path=snakemake.output.model, resume_dir=resume_dir, history_path=snakemake.output.history)
    run_training("finetune_student", args, snakemake.resources.gpu, resume_dir, snakemake.log[0],
                 job.config["resources"]["finetune"]["gpus"])
