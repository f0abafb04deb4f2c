"""Write the real training and validation views into the view-store format used for finetuning."""

from pathlib import Path

from r2l.pseudo import convert_real_data
from r2l.workflow import stage

with stage(snakemake) as job:
    scene = job.scene()
    for split in ("train", "val"):
        convert_real_data(scene, Path(snakemake.output[split]).parent, split=split)
