"""Render one job's share of the random views with the teacher into results/{scene}/pseudo_data/part_{k}."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.models.load import load_model
from r2l.stages.pseudo_data import generate_pseudo_data
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = job.section("pseudo_data")
    scene = job.scene()
    H, W = scene.size_at_width(cfg["resolution"])
    teacher = load_model(snakemake.input.teacher, device=cfg["device"], precision=cfg["precision"])
    out_dir = job.lock(Path(snakemake.output.part).parent)
    generate_pseudo_data(teacher, scene, out_dir, n_views=cfg["n_views"], H=H, W=W,
                         seed=cfg["seed"], views_per_shard=cfg["views_per_shard"],
                         focal_scale=cfg["focal_scale"], chunk=cfg["chunk"], teacher_path=snakemake.input.teacher,
                         llff_enlarge=cfg["llff_enlarge"], part=(int(snakemake.wildcards.part), cfg["jobs"]))
