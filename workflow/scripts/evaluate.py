"""Score teacher, students and finetuned students of one scene into results/{scene}/metrics.csv."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from pathlib import Path

from r2l.stages.evaluate import evaluate_scene
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = job.section("evaluate")
    compile_mode = {True: "on", False: "off"}.get(cfg["compile"], cfg["compile"])  # YAML's bare on/off
    models = {name: snakemake.input[name] for name in ("teacher", "student", "finetuned")}
    compared = [*snakemake.input.compared_students, *snakemake.input.compared_finetuned]
    models.update({Path(path).parent.name: path for path in compared})  # student_NAME, finetuned_NAME
    evaluate_scene(job.scene(), models, snakemake.output.metrics, snakemake.output.renders, device=cfg["device"],
                   use_lpips=cfg["lpips"], scene_name=job.scene_name, n_speed_frames=cfg["speed_frames"],
                   warmup=cfg["warmup_frames"], compile=compile_mode)
