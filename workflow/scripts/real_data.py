"""Write the real training and validation views into the view-store format used for finetuning."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.stages.pseudo_data import convert_real_data
from r2l.workflow import stage

with stage(snakemake) as job:
    scene = job.scene()
    for split in ("train", "val"):
        convert_real_data(scene, Path(snakemake.output[split]).parent, split=split)
