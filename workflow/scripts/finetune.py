"""Finetune the distilled student on the real training views; keep the checkpoint best on validation."""

import _checkout  # noqa: F401  (r2l from this checkout; first)
from dataclasses import replace
from pathlib import Path

from r2l.stages.student import distill_config_from_dict, finetune_student
from r2l.workflow import stage

with stage(snakemake) as job:
    ft = job.section("finetune")
    cfg = distill_config_from_dict(job.section("student"))
    cfg = replace(cfg, val_every=ft["val_every"], val_views=ft["val_views"], ckpt_every=ft["ckpt_every"])
    finetune_student(Path(snakemake.input.student), Path(snakemake.input.real).parent,
                     Path(snakemake.input.val).parent, cfg, ft["steps"], snakemake.output.model,
                     job.resume_dir(("student", "finetune"), [snakemake.input.student, snakemake.input.real]),
                     history_path=snakemake.output.history)
